"""A gateway served from a thread of its own (the fuzz tests are synchronous: schemathesis and hypothesis
drive a plain HTTP client), on the embedded backend with one simulated worker, and the fuzzing budget.

FUZZ_EXAMPLES (examples per operation, default 10) and FUZZ_SEED (default 0) set the pass: CI runs the
default bounded one; ``python -m bench.fuzz`` a longer one.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import ADMIN_KEY, Backend, gateway_settings, serve_gateway
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig

T = TypeVar("T")

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("FUZZ_SEED", "0"))


@dataclass
class LiveGateway:
    url: str
    admin_key: str
    api_key: str  # may manage its organisation's keys (the partner API)


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-gateway", daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    data = Path(tmp_path_factory.mktemp("fuzz"))
    sim = run(start_sim_server(SimConfig(worker_id="fuzz-sim", time_scale=0.0)))
    backend = Backend("embedded", f"sqlite:///{data / 'gateway.db'}", "", "gw")
    served = run(serve_gateway(gateway_settings(backend, [sim.url], request_log=False)))
    try:
        keys = served.app.runtime.keys
        org = run(keys.get_or_create_org("fuzz-org"))
        key = run(keys.create_key(org.id, "fuzz", manage_keys=True)).key
        yield LiveGateway(served.url, ADMIN_KEY, key)
    finally:
        run(served.stop())
        run(sim.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
