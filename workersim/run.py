"""Serving the simulator: in this process (blocking), inside the running event loop, or in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
import time
import urllib.request
from collections.abc import Generator
from multiprocessing.process import BaseProcess

import uvicorn

from workersim.sim_app import SimApp, create_sim_app
from workersim.sim_settings import SimConfig


def _uvicorn_config(app: SimApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        interface="asgi3",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )


def serve_sim(config: SimConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run one simulated worker until interrupted (uvicorn with uvloop and httptools)."""
    uvicorn.Server(_uvicorn_config(create_sim_app(config), host, port)).run()


class _InLoopServer(uvicorn.Server):
    """A uvicorn server for use inside a host program (tests, benchmarks, the demo): it leaves the host's
    signal handlers alone and stops in milliseconds rather than uvicorn's fixed 0.1 s ticks, which add up
    over a test suite that starts hundreds of simulators."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._wake = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True
        self._wake.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()  # idle keep-alive connections close now, busy ones after their response
        for _ in range(int((self.config.timeout_graceful_shutdown or 0) / 0.005)):
            if not (state.connections or state.tasks):
                break
            await asyncio.sleep(0.005)
        for task in list(state.tasks):
            task.cancel()
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


class RunningSim:
    """A simulator served inside the current event loop."""

    def __init__(self, app: SimApp, server: _InLoopServer, task: asyncio.Task[None], url: str) -> None:
        self.app = app
        self.url = url
        self._server = server
        self._task = task

    async def stop(self) -> None:
        """Stop serving: open connections get up to 2 s to finish their responses."""
        self._server.request_exit()
        await self._task

    async def __aenter__(self) -> RunningSim:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_sim_server(config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> RunningSim:
    """Serve a simulator in the running loop (port 0: any free port); ``url`` has no trailing slash."""
    app = create_sim_app(config)
    server = _InLoopServer(_uvicorn_config(app, host, port))
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            exc = task.exception()
            raise RuntimeError(f"the simulator did not start on {host}:{port}") from exc
        await asyncio.sleep(0.005)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return RunningSim(app, server, task, f"http://{host}:{bound}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class SimProcess:
    """A simulator served by a child process."""

    def __init__(self, process: BaseProcess, url: str) -> None:
        self.process = process
        self.url = url

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sim_process(
    config: SimConfig, port: int = 0, host: str = "127.0.0.1", timeout: float = 30.0
) -> SimProcess:
    """Start a simulator in a spawned process and wait until its /health answers 200 (blocking)."""
    port = port or free_port(host)
    process = multiprocessing.get_context("spawn").Process(
        target=serve_sim, args=(config, host, port), name=f"sim-{config.worker_id}", daemon=True
    )
    process.start()
    sim = SimProcess(process, f"http://{host}:{port}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise RuntimeError(f"the simulator process exited with code {process.exitcode}")
        try:
            with urllib.request.urlopen(f"{sim.url}/health", timeout=1.0) as response:
                if response.status == 200:
                    return sim
        except OSError:
            pass
        time.sleep(0.05)
    sim.stop()
    raise RuntimeError(f"the simulator at {sim.url} did not become healthy within {timeout}s")
