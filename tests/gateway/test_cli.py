"""The ``gateway`` command: one database from any folder (named on stderr), clear start-up, plain help,
``--version``, key options, the key list, workers through WorkerService, and one-line errors."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from bench.common import free_port, wait_http
from gateway.cli import app as cli_app
from gateway.cli.context import database_label
from gateway.cli.keys_cmd import parse_expiry
from gateway.config import Settings
from gateway.db import engine as db
from gateway.services.keys import KeyService, KeyView
from tests.conftest import MODEL, Backend
from workersim.run import start_sim_process
from workersim.sim_settings import SimConfig


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with no GATEWAY_* settings, whose per-user data folder is under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"XDG_DATA_HOME": str(tmp_path / "xdg"), "COLUMNS": "200", **extra})
    return env


def _gateway(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_one_database_from_any_folder_and_a_clear_start(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    here, there, elsewhere = (tmp_path / name for name in ("a", "b", "c"))
    for folder in (here, there, elsewhere):
        folder.mkdir()
    database = f"database: sqlite:///{tmp_path / 'xdg' / 'llm-gateway' / 'gateway.db'}"

    created = _gateway(["keys", "create", "--org", "folders"], here, env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sk-gw-") and created.stderr.strip().splitlines() == [database]
    listed = _gateway(["keys", "list"], there, env)
    assert listed.returncode == 0 and listed.stderr.strip() == database
    header, row = listed.stdout.strip().splitlines()
    assert header.split() == ["ID", "ORGANISATION", "NAME", "PREFIX", "STATE", "EXPIRES", "OWN", "LIMITS"]
    assert "folders" in row.split() and key[:22] in row and "active" in row
    assert not list(here.iterdir()) and not list(there.iterdir())  # nothing written where the command ran

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], cwd=elsewhere,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models",
                                         headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=10) as resp:  # the key made in another folder
            assert resp.status == 200
        busy = _gateway(["serve", "--port", str(port)], there, env)
        assert busy.returncode == 1
        lines = busy.stderr.strip().splitlines()
        assert lines == [database, f"error: the gateway cannot listen on 127.0.0.1:{port}: the port is in use by "
                                   "another program (choose another with --port)"], busy.stderr
    finally:
        server.send_signal(signal.SIGINT)
        _, log = server.communicate(timeout=30)
    assert log.count(f"listening on 127.0.0.1:{port}") == 1, log
    assert "no worker is configured" in log
    assert "alembic" not in log and "Traceback" not in log, log
    assert log.splitlines()[0] == database


def test_the_default_data_dir_is_per_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_DATA_DIR", raising=False)
    monkeypatch.delenv("GATEWAY_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert Settings().data_dir == tmp_path / "llm-gateway"
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "mine"))
    assert Settings().sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path / 'mine' / 'gateway.db'}"


def test_the_database_line_never_shows_a_password() -> None:
    assert database_label(Settings(database_url="postgresql://gw:s3cret@db.internal:5432/gateway")) == \
        "postgresql://gw:***@db.internal:5432/gateway"
    assert database_label(Settings(database_url="sqlite:////var/lib/gw.db")) == "sqlite:////var/lib/gw.db"


def test_help_without_type_tags_and_the_version(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    for args in (["keys", "create", "--help"], ["plans", "create", "--help"], ["serve", "--help"], ["--help"],
                 ["workers", "add", "--help"], ["demo", "--help"]):
        shown = _gateway(args, tmp_path, env)
        assert shown.returncode == 0, shown.stderr
        assert not re.search(r"<(str|bool|int|float|int range|float range)>", shown.stdout), (args, shown.stdout)
    help_text = _gateway(["keys", "create", "--help"], tmp_path, env).stdout
    assert re.search(r"--org\s+NAME", help_text) and re.search(r"--expires\s+WHEN", help_text)
    assert "--manage-keys" in help_text and "--no-manage-keys" not in help_text
    version = _gateway(["--version"], tmp_path, env)
    assert version.returncode == 0 and version.stdout.strip() == f"llm-gateway {metadata.version('llm-gateway')}"


def test_parse_expiry() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("90m", now) == now + timedelta(minutes=90)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    assert parse_expiry("2030-02-01", now) == datetime(2030, 2, 1, tzinfo=UTC)
    assert parse_expiry("2030-02-01T12:00:00+02:00", now) == datetime(2030, 2, 1, 10, tzinfo=UTC)
    for bad in ("soon", "30x", "2029-12-31", "-1d"):
        with pytest.raises(typer.BadParameter, match=r"neither a duration|in the past"):
            parse_expiry(bad, now)


async def _key(database_url: str, key_id: str) -> KeyView:
    engine = db.make_engine(Settings(database_url=database_url).sqlalchemy_url)
    try:
        return await KeyService(db.sessionmaker(engine)).get_key(key_id)
    finally:
        await engine.dispose()


def test_keys_create_with_expiry_limits_and_manage_keys(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", backend.database_url)
    runner = CliRunner()
    created = runner.invoke(cli_app, ["keys", "create", "--org", "cli-opts", "--name", "ci", "--expires", "30d",
                                      "--rpm", "5", "--tpm", "100", "--tpd", "1000", "--concurrency", "2",
                                      "--manage-keys"])
    assert created.exit_code == 0, created.output
    listed = runner.invoke(cli_app, ["keys", "list"])
    row = next(line for line in listed.stdout.splitlines() if created.stdout.strip()[:22] in line)
    assert "cli-opts" in row.split() and "rpm=5 tpm=100 tpd=1000 concurrency=2" in row
    view = asyncio.run(_key(backend.database_url, row.split()[0]))
    assert view.manage_keys and view.name == "ci"
    assert (view.limits.rpm, view.limits.tpm, view.limits.tpd, view.limits.concurrency) == (5, 100, 1000, 2)
    assert view.expires_at is not None
    expires = view.expires_at if view.expires_at.tzinfo else view.expires_at.replace(tzinfo=UTC)
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)

    dated = runner.invoke(cli_app, ["keys", "create", "--org", "cli-opts", "--expires", "2031-01-31"])
    assert dated.exit_code == 0, dated.output
    assert "2031-01-31 00:00" in runner.invoke(cli_app, ["keys", "list"]).stdout
    bad = runner.invoke(cli_app, ["keys", "create", "--org", "cli-opts", "--expires", "someday"])
    assert bad.exit_code == 2 and "--expires" in bad.output
    too_big = runner.invoke(cli_app, ["keys", "create", "--org", "cli-opts", "--rpm", str(2**63)])
    assert too_big.exit_code == 1 and "error: rpm must be an integer from 1 to" in too_big.output


def test_workers_add_list_remove(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", backend.database_url)
    runner = CliRunner()
    with start_sim_process(SimConfig(worker_id="cli-worker", time_scale=0.0)) as sim:
        added = runner.invoke(cli_app, ["workers", "add", sim.url])
        assert added.exit_code == 0, added.output
        header, row = added.stdout.strip().splitlines()
        assert header.split() == ["ID", "URL", "SOURCE", "HEALTHY", "MODELS", "KEY"]
        worker_id, url, source, healthy, models, key = row.split()
        assert (url, source, healthy, models, key) == (sim.url, "admin", "yes", MODEL, "-")
        listed = runner.invoke(cli_app, ["workers", "list"])
        assert listed.exit_code == 0 and any(line.split()[:4] == [worker_id, sim.url, "admin", "yes"]
                                             for line in listed.stdout.splitlines())
        removed = runner.invoke(cli_app, ["workers", "remove", worker_id])
        assert removed.exit_code == 0 and removed.stdout.strip() == f"removed {worker_id}"
    assert worker_id not in runner.invoke(cli_app, ["workers", "list"]).stdout
    again = runner.invoke(cli_app, ["workers", "remove", worker_id])
    assert again.exit_code == 1 and f"error: worker {worker_id!r} not found" in again.output
    bad = runner.invoke(cli_app, ["workers", "add", "ftp://somewhere"])
    assert bad.exit_code == 1 and "error: a worker URL is http:// or https://" in bad.output


def test_configured_workers_are_listed_and_not_removable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GATEWAY_WORKERS", nobody)
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["workers", "list"])
    row = next(line for line in listed.stdout.splitlines() if nobody in line)
    assert row.split()[2:4] == ["config", "no"]
    refused = runner.invoke(cli_app, ["workers", "remove", row.split()[0]])
    assert refused.exit_code == 1 and "comes from the configuration" in refused.output


def test_an_unreachable_database_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"postgresql://gw:pw@127.0.0.1:{free_port()}/nowhere")
    result = CliRunner().invoke(cli_app, ["keys", "list"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(
        "error: the database postgresql://gw:***@127.0.0.1:"), result.output
    assert "Traceback" not in result.output and "pw@" not in result.output


def test_service_errors_are_one_line(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", backend.database_url)
    runner = CliRunner()
    for args, message in ((["keys", "revoke", "key_nope"], "error: key 'key_nope' not found"),
                          (["plans", "delete", "plan_nope"], "error: plan 'plan_nope' not found"),
                          (["keys", "limits", "key_nope", "--rpm", "3"], "error: key 'key_nope' not found")):
        result: Any = runner.invoke(cli_app, args)
        assert result.exit_code == 1 and result.stderr.strip().splitlines()[-1] == message, result.output
