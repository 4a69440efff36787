"""The async SQL engine and schema migrations (Alembic, imported only when the schema is not current), for
PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

import migrations
from gateway.db.connect_options import connect_options
from gateway.db.schema_version import Schema, classify, database_revisions, revision_chain

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("gateway.db")

# What a query raises while the database cannot be answering: PostgreSQL down (a refused connect is a plain
# OSError from asyncpg), a connection dropped mid-query (DBAPIError, connection invalidated), a server
# shutting down or starting up, too many connections, a connect timeout; SQLite missing or locked
# (OperationalError). Catch these, then ask ``unreachable`` (a DBAPIError may also be a real error).
DB_ERRORS: tuple[type[Exception], ...] = (OSError, TimeoutError, DBAPIError, asyncpg.PostgresError,
                                          asyncpg.InterfaceError)
_DRIVER_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                       asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError)


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (one of ``DB_ERRORS``) says the database is unreachable rather than the query wrong."""
    if isinstance(exc, _DRIVER_UNREACHABLE):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        driver = exc.orig.__cause__ if exc.orig is not None else None  # asyncpg's own, under the adapter's
        return isinstance(driver, _DRIVER_UNREACHABLE)
    return False


def describe(exc: BaseException) -> str:
    """A log line's account of a database failure: the driver's message, never the statement or its values."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig.__cause__ or exc.orig
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:300]


def make_engine(url: str) -> AsyncEngine:
    """The engine, with ``hide_parameters``: a failed statement's error (and SQLAlchemy's own log lines) shows
    the statement, never its values (an organisation's cache salt, a key's secret hash)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # aiosqlite logs every call with its arguments at DEBUG: never below INFO.
        quiet = logging.getLogger("aiosqlite")
        quiet.setLevel(max(quiet.level, logging.INFO))
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        _sqlite_pragmas(engine.sync_engine)
        return engine
    # A connection attempt or a statement that hangs (a failover, a host dropping packets) fails in bounded
    # time, so the background writers retry instead of waiting on it. Pool sizes and the PgBouncer mode come
    # on the URL (connect_options.py; docs/operations.md sizes them per process).
    options = connect_options(url)
    engine = create_async_engine(options.url, pool_size=options.pool_size, max_overflow=options.max_overflow,
                                 pool_pre_ping=True, hide_parameters=True,
                                 connect_args={"timeout": 5, "command_timeout": 60, **options.driver_args})
    event.listen(engine.sync_engine, "handle_error", _drop_row_values)
    return engine


_ARGUMENT_VALUE = re.compile(r"(invalid input for query argument \$\d+): .*", re.DOTALL)


def _drop_row_values(context: ExceptionContext) -> None:
    """What ``hide_parameters`` misses: PostgreSQL's DETAIL quotes the row ("Failing row contains (...)",
    "Key (lookup)=(...)"), and asyncpg's message for a value it cannot encode quotes the value; asyncpg's error
    is chained under SQLAlchemy's, so every traceback would print them. Drop both."""
    driver = context.original_exception.__cause__
    if not isinstance(driver, asyncpg.PostgresError):
        return
    driver.detail = None
    if isinstance(driver, asyncpg.DataError):
        for exc in (driver, context.original_exception, context.sqlalchemy_exception):
            if exc is not None and exc.args and isinstance(exc.args[0], str):
                exc.args = (_ARGUMENT_VALUE.sub(r"\1: value omitted", exc.args[0]), *exc.args[1:])


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: object, _record: object) -> None:
        cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # about 170 ms of imports: only when a migration may have to run

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_sync(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``; blocking (call through ``asyncio.to_thread`` from async code)."""
    from alembic import command

    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def _no_sqlite_file(url: str) -> bool:
    if not url.startswith("sqlite"):
        return False
    path = url.split(":///", 1)[-1]
    return not path or path == ":memory:" or not Path(path).exists()


async def schema_state(url: str) -> Schema:
    """Where the database's schema stands against this gateway's migrations (one query, no Alembic);
    raises what the query raises (the database unreachable)."""
    if _no_sqlite_file(url):
        return Schema.BEHIND  # nothing there yet (and a new engine's memory database is always empty)
    engine = make_engine(url)
    try:
        return classify(await database_revisions(engine), revision_chain())
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``: to the head, Alembic runs only when the schema is not already there
    (a database it cannot read goes to Alembic too, which reports the failure as it always did)."""
    if revision == "head":
        try:
            if await schema_state(url) is Schema.CURRENT:
                return
        except DB_ERRORS:
            pass
    await asyncio.to_thread(upgrade_sync, url, revision)


class SchemaNotCurrent(RuntimeError):
    """The database is not migrated to this gateway's schema and the gateway may not migrate it."""


async def require_current(url: str) -> None:
    """With ``GATEWAY_AUTO_MIGRATE=false``: refuse a database that is behind this gateway's migrations (never
    migrated, or at an older revision). One at a revision this gateway does not know (a newer release's, during
    a rolling upgrade) is served, with a warning."""
    state = await schema_state(url)
    if state is Schema.BEHIND:
        raise SchemaNotCurrent("the database schema is not at this gateway's revision (GATEWAY_AUTO_MIGRATE is "
                               "false): apply the migrations with `gateway db upgrade`")
    if state is Schema.UNKNOWN:
        log.warning("the database schema is at a revision this gateway does not know (a newer release's?), "
                    "or its migrations are not one plain chain: serving on it")
