"""Start-up: the schema is checked without Alembic when it is current, a gateway that may not migrate refuses
a schema behind its own, the FastAPI app (admin, health, models) is built off the hot path's way while
every route of it keeps answering as before, and the garbage collector, off for the start, is on once the
command runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text

from bench.common import free_port
from gateway.cli import serve_cmd
from gateway.config import Settings
from gateway.db import engine as db
from gateway.db.schema_version import Schema, classify, revision_chain
from tests.conftest import (
    ADMIN_KEY,
    MODEL,
    Backend,
    gateway_settings,
    scratch_database,
    serve_gateway,
    served,
)
from workersim.run import RunningSim

ROOT = Path(__file__).resolve().parents[2]
OLDER = "0008_providers"


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The SQLAlchemy URL of an empty database of this test's own."""
    if request.param == "sqlite":
        yield Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}").sqlalchemy_url
        return
    async with scratch_database("gw_fresh_") as url:
        yield Settings(database_url=url).sqlalchemy_url


def test_the_revision_chain_read_from_the_files_is_alembics() -> None:
    script = ScriptDirectory.from_config(db.alembic_config("sqlite://"))
    assert revision_chain() == [s.revision for s in reversed(list(script.walk_revisions()))]
    assert (revision_chain() or [""])[-1] == script.get_current_head()


def test_a_migration_chain_that_is_not_plain_is_left_to_alembic(tmp_path: Path) -> None:
    for name, rev, down in (("a.py", "r1", "None"), ("b.py", "r2", '"r1"'), ("c.py", "r3", '"r1"')):
        (tmp_path / name).write_text(f'revision = "{rev}"\ndown_revision = {down}\n')
    assert revision_chain(tmp_path) is None  # two heads
    (tmp_path / "c.py").write_text('revision = "r3"\ndown_revision = ("r1", "r2")\n')
    assert revision_chain(tmp_path) is None  # a merge
    (tmp_path / "c.py").write_text('revision = "r3"\ndown_revision = "r2"\n')
    assert revision_chain(tmp_path) == ["r1", "r2", "r3"]
    assert classify(["r3"], ["r1", "r2", "r3"]) is Schema.CURRENT
    assert classify([], ["r1", "r2", "r3"]) is Schema.BEHIND
    assert classify(["r1"], ["r1", "r2", "r3"]) is Schema.BEHIND
    assert classify(["r9"], ["r1", "r2", "r3"]) is Schema.UNKNOWN
    assert classify(["r1", "r3"], ["r1", "r2", "r3"]) is Schema.UNKNOWN
    assert classify(["r3"], None) is Schema.UNKNOWN


async def test_without_auto_migrate_a_schema_behind_is_refused(fresh_url: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    assert await db.schema_state(fresh_url) is Schema.BEHIND
    with pytest.raises(db.SchemaNotCurrent, match="gateway db upgrade"):
        await db.require_current(fresh_url)
    await db.upgrade(fresh_url, OLDER)
    assert await db.schema_state(fresh_url) is Schema.BEHIND
    with pytest.raises(db.SchemaNotCurrent):
        await db.require_current(fresh_url)

    await db.upgrade(fresh_url)
    assert await db.schema_state(fresh_url) is Schema.CURRENT
    await db.require_current(fresh_url)

    # A newer release's revision (a rolling upgrade): served with a warning; migrating from it is Alembic's
    # refusal, as before.
    engine = db.make_engine(fresh_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    finally:
        await engine.dispose()
    assert await db.schema_state(fresh_url) is Schema.UNKNOWN
    await db.require_current(fresh_url)
    assert "does not know" in caplog.text
    with pytest.raises(CommandError, match="9999_from_the_future"):
        await db.upgrade(fresh_url)


def _python(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_alembic_is_imported_only_for_a_schema_not_current(tmp_path: Path) -> None:
    url = Settings(database_url=f"sqlite:///{tmp_path / 'gw.db'}").sqlalchemy_url
    check = ("import asyncio, os, sys; from gateway.db import engine as db; url = os.environ['URL']; "
             "asyncio.run(db.upgrade(url)); print('alembic' in sys.modules, asyncio.run(db.schema_state(url)).value)")
    assert _python(check, URL=url) == "True current"  # a new database: migrated by Alembic
    assert _python(check, URL=url) == "False current"  # already at the head: one query


def test_the_hot_path_imports_neither_fastapi_nor_alembic() -> None:
    imported = _python("import sys; from gateway.app import create_app; create_app(); "
                       "print(sorted(m for m in ('fastapi', 'starlette', 'alembic') if m in sys.modules))")
    assert imported == "[]"


async def test_the_server_checks_and_scrapes_its_workers_without_importing_aiohttp(tmp_path: Path,
                                                                                  sims: list[RunningSim]) -> None:
    """aiohttp cost ~0.2 s of every cold start and served only the health checks: they go through the lean
    HTTP/1.1 client now (``worker_probe.py``). The runtime checks its workers at start, reads their models
    and scrapes their /metrics, and aiohttp is never imported."""
    code = ("import asyncio, sys\n"
            "from gateway.config import Settings\n"
            "from gateway.runtime import build_runtime\n"
            "async def main():\n"
            "    async with build_runtime(Settings()) as rt:\n"
            "        for w in sorted(rt.pool.all(), key=lambda w: w.url):\n"
            "            print(w.healthy, sorted(w.models), 'kv_tokens' in w.metrics)\n"
            "    print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))\n"
            "asyncio.run(main())\n")
    env = {"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_DATABASE_URL": "", "GATEWAY_REDIS_URL": "",
           "GATEWAY_WORKERS": ",".join(s.url for s in sims)}
    out = await asyncio.to_thread(_python, code, **env)  # the simulators answer from this loop meanwhile
    assert out.splitlines() == [f"True ['{MODEL}'] True"] * len(sims) + ["[]"]


def test_serve_without_auto_migrate_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_AUTO_MIGRATE": "false", "PYTHONPATH": str(ROOT)})

    def serve() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port())], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)

    for revision in (None, OLDER):  # never migrated; migrated by an older release
        if revision is not None:
            done = subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade", revision], cwd=ROOT,
                                  env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        refused = serve()
        assert refused.returncode == 3, refused.stderr
        assert "SchemaNotCurrent" in refused.stderr and "gateway db upgrade" in refused.stderr, refused.stderr


async def test_every_route_answers_as_soon_as_the_gateway_has_started(backend: Backend,
                                                                      sims: list[RunningSim]) -> None:
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims]))
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            # No wait after the start: the chat request, the probes and the admin API each answer.
            rt = served.app.runtime
            org = await rt.keys.get_or_create_org("org-" + secrets.token_hex(3))
            key = (await rt.keys.create_key(org.id, "test")).key
            chat = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                     json={"model": MODEL, "max_tokens": 4, "messages": [{"role": "user",
                                                                                         "content": "hi"}]})
            assert chat.status_code == 200, chat.text
            ready = await client.get("/ready")
            assert ready.status_code == 200 and ready.headers["content-type"] == "application/json"
            assert ready.json()["status"] == "ready" and ready.json()["checks"]["workers"] is True
            assert ready.headers["x-request-id"].startswith("req_")
            orgs = await client.get("/admin/orgs", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert orgs.status_code == 200 and any(o["id"] == org.id for o in orgs.json()["data"]), orgs.text
            assert (await client.get("/health")).json() == {"status": "ok"}
            assert served.app._rest is not None  # by now built (the orgs list waited for it)
            wrong = await client.post("/ready")
            assert wrong.status_code == 405 and json.loads(wrong.text)["error"]["code"] == "method_not_allowed"
            assert "/admin/orgs" in served.app.api.openapi()["paths"]
            # The probes, answered in front of FastAPI, say what its documented routes say, byte for byte.
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served.app.api),
                                         base_url="http://gw") as api:
                for path in ("/health", "/ready"):
                    documented = await api.get(path)
                    assert (documented.status_code, documented.content) == (200, (await client.get(path)).content)
    finally:
        await served.stop()


def test_a_verb_runs_with_the_garbage_collector_on(tmp_path: Path) -> None:
    """``gateway.cli.main`` turns the collector off for the start (imports); every verb but serve turns it on
    before it runs, serve once the server has started (next test): a long-lived verb never runs without it."""
    code = ("import gc, sys\nfrom gateway.cli import main\nsys.argv = ['gateway', 'keys', 'list']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('collector on:', gc.isenabled())")
    assert _python(code, GATEWAY_DATA_DIR=str(tmp_path)).splitlines()[-1] == "collector on: True"


class _QuietAnnouncedServer(serve_cmd._AnnouncedServer):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def test_serve_turns_the_garbage_collector_on_once_started() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        assert not gc.isenabled()  # still off through the lifespan's start
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    server = _QuietAnnouncedServer(uvicorn.Config(app, host="127.0.0.1", port=0, loop="none", log_level="warning"))
    gc.disable()
    try:
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        assert gc.isenabled()
        server.should_exit = True
        await task
    finally:
        gc.enable()


async def test_the_start_checks_each_worker_once_not_again_beside_the_first_requests(backend: Backend) -> None:
    health: list[str] = []

    async def worker(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":
            health.append(scope["path"])
        body = json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode() if scope["path"] == "/v1/models" \
            else b"ok"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async with served(worker, lifespan="off") as url:
        gw = await serve_gateway(gateway_settings(backend, [url], health_interval_s=30.0, worker_sync_interval_s=30.0))
        try:
            await asyncio.sleep(0.5)
            assert health == ["/health"]  # the lifespan's check, and no second one at once
        finally:
            await gw.stop()


async def test_the_server_raises_the_collectors_young_threshold_while_it_serves(backend: Backend) -> None:
    """Young collections under load find next to no garbage but traverse every request in flight
    (Settings.gc_threshold): the lifespan sets the first generation's threshold, keeps the older ones', and
    puts the threshold back when it ends."""
    before = gc.get_threshold()
    assert before[0] != 12_345
    gw = await serve_gateway(gateway_settings(backend, [], gc_threshold=12_345))
    try:
        assert gc.get_threshold() == (12_345, *before[1:])
    finally:
        await gw.stop()
    assert gc.get_threshold() == before
    assert Settings().gc_threshold == 20_000
