"""The README's configuration table lists every setting of ``gateway.config.Settings`` with its real default.

A row is ``| `GATEWAY_NAME` | default | meaning |``; the default is either one backticked value, written as
it would be in the environment variable, or ``empty`` (optionally followed by ``: what that means``).
Each default is read back through the settings' own validation, so ``2`` matches ``2.0`` and ``empty``
matches both ``""`` and an empty worker list.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import platformdirs
import pytest

from gateway.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\|\s*`GATEWAY_([A-Z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|\s*$")
LITERAL = re.compile(r"^`([^`]*)`$")
EMPTY = re.compile(r"^empty(:.*)?$")


def readme_rows(text: str) -> list[tuple[str, str, str]]:
    """(field name, default cell, meaning) of every settings row, in order."""
    rows = []
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match.group(1).lower(), match.group(2).strip(), match.group(3).strip()))
    return rows


def default_text(cell: str) -> str:
    """The environment-variable text a default cell stands for; a cell of any other form is an error."""
    literal = LITERAL.match(cell)
    if literal:
        return literal.group(1)
    if EMPTY.match(cell):
        return ""
    if cell == "the per-user data folder":  # platform-dependent: what platformdirs answers here
        return platformdirs.user_data_dir("llm-gateway", appauthor=False)
    raise ValueError(f"default {cell!r}: write one `value`, 'empty[: meaning]' or 'the per-user data folder'")


def read_back(name: str, text: str) -> Any:
    """What the setting becomes when its variable holds ``text`` (validation only: no environment, no file)."""
    return getattr(Settings.model_validate({name: text}), name)


ROWS = readme_rows(README.read_text())


def test_every_setting_is_listed_once() -> None:
    names = [name for name, _, _ in ROWS]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"listed more than once: {duplicates}"
    fields = set(Settings.model_fields)
    missing = sorted(fields - set(names))
    unknown = sorted(set(names) - fields)
    assert not missing, f"settings missing from the README's table: {['GATEWAY_' + n.upper() for n in missing]}"
    assert not unknown, f"README lists settings that do not exist: {['GATEWAY_' + n.upper() for n in unknown]}"


@pytest.mark.parametrize(("name", "cell", "meaning"), ROWS, ids=[row[0] for row in ROWS])
def test_listed_default_is_the_real_default(name: str, cell: str, meaning: str) -> None:
    assert meaning, f"GATEWAY_{name.upper()} has no meaning in the README"
    field = Settings.model_fields[name]
    assert read_back(name, default_text(cell)) == field.get_default(call_default_factory=True)


def test_the_parser_rejects_what_it_cannot_compare() -> None:
    assert readme_rows("| `GATEWAY_PORT` | `8080` | port |\n| `GATEWAY_HOST`, `GATEWAY_PORT` | x | y |") == [
        ("port", "`8080`", "port")]
    assert default_text("empty: in-process state") == ""
    assert read_back("workers", "") == []
    assert read_back("key_cache_ttl_s", "3") == 3.0
    with pytest.raises(ValueError):
        default_text("8 MiB")
    assert read_back("port", "8081") != Settings.model_fields["port"].get_default()
