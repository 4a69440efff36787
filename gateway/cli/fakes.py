"""The outside world's fakes the CLI starts: simulated GPU workers (``gateway sim``, ``gateway demo``) and
the Stripe test server (``gateway billing stripe-test-server``). Imported lazily and only here, so no
other verb loads them."""

from __future__ import annotations

from typing import Any, Protocol


class RunningWorker(Protocol):
    """A simulated worker serving in a child process."""

    url: str

    def stop(self) -> None: ...


def serve_simulated_worker(host: str, port: int, **config: Any) -> None:
    """One simulated vLLM worker in this process until interrupted; ``config``: SimConfig's fields."""
    from workersim.run import serve_sim
    from workersim.sim_settings import SimConfig

    serve_sim(SimConfig(**config), host, port)


def start_simulated_workers(ports: list[int]) -> list[RunningWorker]:
    """One simulated worker process per port, each healthy on return (stop them with ``.stop()``)."""
    from workersim.run import start_sim_process
    from workersim.sim_settings import SimConfig

    started: list[RunningWorker] = []
    try:
        for port in ports:
            started.append(start_sim_process(SimConfig(worker_id=f"sim-{port}"), port))
    except BaseException:
        for sim in started:
            sim.stop()
        raise
    return started


def serve_stripe_fake(meters: list[str], host: str, port: int) -> None:
    """The local Stripe-compatible test server in this process until interrupted."""
    import uvicorn

    from stripefake.stripe_server import StripeTestServer

    uvicorn.run(StripeTestServer(meters), host=host, port=port, log_level="warning", access_log=False)
