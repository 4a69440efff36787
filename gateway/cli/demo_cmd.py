"""``gateway demo``: simulated workers + the gateway on the embedded default + a demo key, with a banner that
says how to call it. The demo keeps its own data folder (``<data dir>/demo``): its database and its key,
which the next run reuses; ``--reset`` starts afresh."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from gateway.cli.context import ServiceContext, database_label, service_context, setup_logging
from gateway.cli.fakes import RunningWorker, start_simulated_workers
from gateway.cli.serve_cmd import require_free_port
from gateway.config import Settings
from gateway.services.keys import split_key
from gateway.upstream.fleet_config import WorkerSpec

DEMO_ORG = "demo"
DEMO_KEY_NAME = "demo-key"
MODEL = "grok-code-fast-1"

_BANNER = """
LLM gateway demo is running.

  gateway      http://127.0.0.1:{port}   (docs: http://127.0.0.1:{port}/docs)
  dashboard    http://127.0.0.1:{port}/dashboard   (sign in with the API key or the admin key)
  metrics      http://127.0.0.1:{port}/metrics
  workers      {workers}
  admin key    {admin_key}
  API key      {key}
  data         {data_dir}
               database {database}; the API key is kept for the next run.
               To start afresh: gateway demo --reset

Try it:

  curl -s http://127.0.0.1:{port}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Write a haiku about caches"}}]}}'

{install}  {python} - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="{key}")
for _ in range(2):  # the second call shows cached_tokens > 0
    r = client.chat.completions.create(model="{model}",
        messages=[{{"role": "user", "content": "Explain prefix caching. " * 40}}])
    print(r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens, r.choices[0].message.content[:60])
PY

Press Ctrl-C to stop everything.
"""


def python_command() -> str:
    """How to call this interpreter from a shell: ``python`` when that is it, else its path."""
    return "python" if shutil.which("python") == sys.executable else sys.executable


def banner(*, port: int, workers: list[str], admin_key: str, key: str, data_dir: Path, database: str,
           has_openai: bool, python: str) -> str:
    """What the demo prints once it serves; the SDK example is preceded by its install line when the
    ``openai`` package is missing, so that both run as printed."""
    install = "" if has_openai else f"  {python} -m pip install openai   # the SDK for the example below\n"
    return _BANNER.format(port=port, workers=", ".join(workers), admin_key=admin_key, key=key, data_dir=data_dir,
                          database=database, install=install, python=python, model=MODEL)


def _read_key(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _store_key(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")


async def demo_key(ctx: ServiceContext, path: Path) -> str:
    """The demo's API key: the one stored at ``path`` while it is still valid, else a new one (stored)."""
    stored = await asyncio.to_thread(_read_key, path)
    parts = split_key(stored) if stored else None
    if stored and parts is not None and await ctx.keys.verify(*parts) is not None:
        return stored
    key = (await ctx.keys.create_key_for_org_name(DEMO_ORG, DEMO_KEY_NAME)).key
    await asyncio.to_thread(_store_key, path, key)
    return key


async def _serve(settings: Settings, sims: list[RunningWorker]) -> None:
    from gateway.app import create_app
    from gateway.server import server_config

    async with service_context(settings) as ctx:
        key = await demo_key(ctx, settings.data_dir / "demo-key")
    # The same server as `gateway serve`: uvicorn under the gateway's connection limits.
    server = uvicorn.Server(server_config(create_app(settings), settings, host="127.0.0.1", port=settings.port,
                                          loop="none"))
    text = banner(port=settings.port, workers=[s.url for s in sims], admin_key=settings.admin_key, key=key,
                  data_dir=settings.data_dir, database=database_label(settings),
                  has_openai=importlib.util.find_spec("openai") is not None, python=python_command())
    serving = asyncio.create_task(server.serve())  # uvicorn turns Ctrl-C into a clean shutdown
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn exposes only a flag
        await asyncio.sleep(0.05)
    if server.started:
        print(text, flush=True)
    await serving


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def demo(
    port: Annotated[int, typer.Option(help="Gateway port", metavar="PORT")] = 8080,
    workers: Annotated[int, typer.Option(help="Simulated workers", metavar="N", min=1)] = 3,
    first_worker_port: Annotated[int, typer.Option(help="Port of the first simulated worker", metavar="PORT")] = 8101,
    reset: Annotated[bool, typer.Option("--reset", help="Delete the demo's data (database, key) first")] = False,
) -> None:
    """Start simulated workers and the gateway on the embedded default, with a demo key."""
    import uvloop

    setup_logging("WARNING")
    base = Settings()
    data_dir = base.data_dir / "demo"
    if reset and data_dir.exists():
        shutil.rmtree(data_dir)
        typer.echo(f"removed the demo's data in {data_dir}", err=True)
    ports = [first_worker_port + i for i in range(workers)]
    require_free_port("127.0.0.1", port)
    for wport in ports:
        require_free_port("127.0.0.1", wport, "a simulated worker")
    admin_key = os.environ.get("GATEWAY_ADMIN_KEY") or "admin-" + secrets.token_urlsafe(12)
    sims: list[RunningWorker] = []
    # SIGTERM (kill, a closing terminal) stops everything as Ctrl-C does; by default it would end this
    # process without the `finally` below, leaving the workers running (uvicorn re-raises it after its
    # own clean shutdown).
    signal.signal(signal.SIGTERM, _interrupt)
    try:  # Ctrl-C at any point, start-up included, stops everything started so far
        sims = start_simulated_workers(ports)
        # Always the embedded default (SQLite in the demo's folder, in-process state): never a real database.
        settings = Settings(workers=[WorkerSpec(url=s.url) for s in sims], admin_key=admin_key, port=port,
                            data_dir=data_dir, database_url="", redis_url="")
        uvloop.run(_serve(settings, sims))
    except KeyboardInterrupt:
        pass
    finally:
        for s in sims:
            with contextlib.suppress(OSError):
                s.stop()
        print("demo stopped", flush=True)
