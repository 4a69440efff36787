"""Where a database's schema stands against this gateway's migrations, without importing Alembic.

Alembic (and its loading of every migration script) costs about 170 ms of a start that otherwise finds
the schema already current. The revision ids and their order are read from the migration files' own
``revision = "..."`` / ``down_revision = "..."`` lines, the database's from its ``alembic_version``
table; only a schema that is not at the head needs Alembic. Whatever this cheap reading cannot tell for
certain (a merge of branches, a file it cannot parse, a table it cannot read) counts as not current, so
that Alembic decides, as it always did.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations

_REVISION = re.compile(r"""^revision\s*(?::\s*str\s*)?=\s*["']([^"']+)["']\s*$""", re.MULTILINE)
_DOWN_REVISION = re.compile(r"""^down_revision\s*(?::[^=]+)?=\s*(?:None|["']([^"']+)["'])\s*$""", re.MULTILINE)


class Schema(enum.Enum):
    CURRENT = "current"  # at this gateway's head revision
    BEHIND = "behind"  # no revision yet, or one of this gateway's older ones
    UNKNOWN = "unknown"  # a revision this gateway does not know (a newer release's), or unreadable


def revision_chain(versions: Path | None = None) -> list[str] | None:
    """This gateway's revisions, oldest first; None when the files are not one plain chain (Alembic decides)."""
    versions = versions or Path(migrations.__file__).parent / "versions"
    parent: dict[str, str | None] = {}
    for path in sorted(versions.glob("*.py")):
        source = path.read_text()
        rev, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if rev is None and down is None:
            continue  # not a migration (__init__.py)
        if rev is None or down is None or rev.group(1) in parent:
            return None
        parent[rev.group(1)] = down.group(1)
    children = {down: rev for rev, down in parent.items()}
    if len(children) != len(parent):  # two revisions on one parent: branches
        return None
    chain: list[str] = []
    at: str | None = None
    while at in children:
        at = children[at]
        chain.append(at)
    return chain if len(chain) == len(parent) and chain else None


async def database_revisions(engine: AsyncEngine) -> list[str]:
    """The rows of ``alembic_version`` (none for a database never migrated); raises what the query raises."""
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda sync: sync.dialect.has_table(sync, "alembic_version")):
            return []
        rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
        return [str(r[0]) for r in rows]


def classify(rows: list[str], chain: list[str] | None) -> Schema:
    if chain is None:
        return Schema.UNKNOWN
    if rows == [chain[-1]]:
        return Schema.CURRENT
    if not rows or (len(rows) == 1 and rows[0] in chain):
        return Schema.BEHIND
    return Schema.UNKNOWN
