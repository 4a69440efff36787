"""``gateway billing dead-letters list / replay``: an operator sees why records were refused and, once the
cause is fixed, writes them into the ledger; letters that still fail stay, with their new reason."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

from billing.ledger.dead_letters import DeadLetters, letter_for
from gateway.config import Settings
from gateway.db import engine as db
from tests.billing.conftest import make_record
from tests.billing.test_ledger_loop import _rows


def _cli(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_DATA_DIR": str(data_dir), "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "gateway.cli", "billing", "dead-letters", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_dead_letters_are_listed_and_replayed(tmp_path: Path) -> None:
    org = "org_" + secrets.token_hex(4)
    fixed = make_record(org, 1)  # refused once (say, a column too narrow then); fine now
    broken = make_record(org, 2, billed_ticks=1 << 64)
    url = Settings(data_dir=str(tmp_path)).sqlalchemy_url

    async def setup() -> None:
        await db.upgrade(url)
        engine = db.make_engine(url)
        await DeadLetters(engine).add([letter_for(fixed.encode(), "value too long for type", fixed.request_id),
                                       letter_for(broken.encode(), "out of range", broken.request_id)])
        await engine.dispose()

    asyncio.run(setup())
    listed = _cli(["list"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert fixed.request_id in listed.stdout and "value too long" in listed.stdout and "2 dead letters" in listed.stdout
    replayed = _cli(["replay"], tmp_path)
    assert replayed.returncode == 1  # one still fails
    assert "1 written into the ledger, 1 still failing" in replayed.stdout and broken.request_id in replayed.stdout

    async def check() -> tuple[int, list[tuple[str, str]]]:
        engine = db.make_engine(url)
        try:
            return await _rows(engine, org), [(d.id, d.reason) for d in await DeadLetters(engine).oldest()]
        finally:
            await engine.dispose()

    rows, left = asyncio.run(check())
    assert rows == 1 and [i for i, _ in left] == [broken.request_id]
    assert "billed_ticks" in left[0][1]  # the reason it fails now, not the one it was kept with
