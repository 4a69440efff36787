"""``gateway demo``: simulated workers + the gateway on the embedded default + a demo key."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import uvicorn

from gateway.app import create_app
from gateway.config import Settings

if TYPE_CHECKING:  # the simulator is a fake: imported only when the demo runs
    from workersim.run import SimProcess

_BANNER = """
LLM gateway demo is running.

  gateway      http://127.0.0.1:{port}   (docs: http://127.0.0.1:{port}/docs)
  dashboard    http://127.0.0.1:{port}/dashboard   (sign in with the API key or the admin key)
  metrics      http://127.0.0.1:{port}/metrics
  workers      {workers}
  admin key    {admin_key}
  API key      {key}

Try it:

  curl -s http://127.0.0.1:{port}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "grok-code-fast-1", "messages": [{{"role": "user", "content": "Write a haiku about caches"}}]}}'

  python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="{key}")
for _ in range(2):  # the second call shows cached_tokens > 0
    r = client.chat.completions.create(model="grok-code-fast-1",
        messages=[{{"role": "user", "content": "Explain prefix caching. " * 40}}])
    print(r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens, r.choices[0].message.content[:60])
PY

Press Ctrl-C to stop everything.
"""


async def _serve(port: int, sims: list[SimProcess], admin_key: str) -> None:
    from gateway.services.keys import create_key_for_org_name

    settings = Settings(workers=[s.url for s in sims], admin_key=admin_key, port=port)
    key = await create_key_for_org_name(settings.sqlalchemy_url, "demo", "demo-key")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, loop="none",
                                           http="httptools", log_level="warning", access_log=False))
    banner = _BANNER.format(port=port, workers=", ".join(s.url for s in sims), admin_key=admin_key, key=key)
    serving = asyncio.create_task(server.serve())  # uvicorn turns Ctrl-C into a clean shutdown
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn exposes only a flag
        await asyncio.sleep(0.05)
    if server.started:
        print(banner, flush=True)
    await serving


def run_demo(port: int, n_workers: int, first_worker_port: int, admin_key: str) -> None:
    import uvloop

    from workersim.run import start_sim_process
    from workersim.sim_settings import SimConfig

    sims: list[SimProcess] = []
    try:  # Ctrl-C at any point, start-up included, stops everything started so far
        for i in range(n_workers):
            wport = first_worker_port + i
            sims.append(start_sim_process(SimConfig(worker_id=f"sim-{wport}"), wport))
        uvloop.run(_serve(port, sims, admin_key))
    except KeyboardInterrupt:
        pass
    finally:
        for s in sims:
            with contextlib.suppress(OSError):
                s.stop()
        print("demo stopped", flush=True)
