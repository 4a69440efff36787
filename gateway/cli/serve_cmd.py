"""``gateway serve`` (the gateway), ``gateway sim`` (a simulated worker) and ``gateway db ...`` (the schema)."""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import socket
from typing import Annotated

import typer
import uvicorn

from gateway.cli.context import announce_database, cli_settings, setup_logging
from gateway.cli.partitions_cmd import partitions_app
from gateway.server import fit_open_files, server_config
from gateway.server import serve as serve_processes

log = logging.getLogger("gateway")

db_app = typer.Typer(help="Database schema", no_args_is_help=True)
db_app.add_typer(partitions_app, name="partitions")


def require_free_port(host: str, port: int, what: str = "the gateway") -> None:
    """Exit with one clear line (code 1) when ``host:port`` cannot be listened on, before anything starts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        typer.echo(f"error: {what} cannot listen on {host}:{port}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "the port is in use by another program" if exc.errno == errno.EADDRINUSE else exc.strerror
            typer.echo(f"error: {what} cannot listen on {host}:{port}: {reason} (choose another with --port)",
                       err=True)
            raise typer.Exit(1) from None


class _AnnouncedServer(uvicorn.Server):
    """Logs one ``listening on HOST:PORT`` line once the socket is bound and the app has started, and turns the
    garbage collector back on (``gateway.cli.main`` turned it off for the start)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        gc.enable()
        log.info("listening on %s:%d", self.config.host, self.config.port)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default GATEWAY_HOST)", metavar="HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default GATEWAY_PORT)", metavar="PORT")] = None,
    processes: Annotated[int, typer.Option(help="Server processes", metavar="N", min=1)] = 1,
) -> None:
    """Run the gateway."""
    setup_logging()
    settings = cli_settings()
    host, port = host or settings.host, port or settings.port
    announce_database(settings)
    require_free_port(host, port)
    if processes == 1:
        config = server_config("gateway.app:create_app", settings, max_connections=fit_open_files(settings),
                               factory=True, host=host, port=port, loop="uvloop")
        server = _AnnouncedServer(config)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if not server.started:
            raise typer.Exit(3)  # uvicorn's start-up failure; it logged why
        return
    log.info("listening on %s:%d (%d processes)", host, port, processes)
    gc.enable()  # the server processes are interpreters of their own; this one only supervises them
    serve_processes(settings, host, port, processes)


def sim(
    port: Annotated[int, typer.Option(help="Port", metavar="PORT")] = 8001,
    host: Annotated[str, typer.Option(help="Bind address", metavar="HOST")] = "127.0.0.1",
    model: Annotated[str, typer.Option(help="Model name served", metavar="NAME")] = "grok-code-fast-1",
    kv_capacity: Annotated[int, typer.Option(help="KV cache capacity in tokens", metavar="TOKENS")] = 262144,
    block_size: Annotated[int, typer.Option(help="KV block size in tokens", metavar="TOKENS")] = 16,
    prefill_speed: Annotated[float, typer.Option(help="Prefill tokens per second", metavar="N")] = 20000.0,
    decode_speed: Annotated[float, typer.Option(help="Output tokens per second per sequence", metavar="N")] = 200.0,
    max_running: Annotated[int, typer.Option(help="Max running sequences", metavar="N")] = 64,
    reasoning_tokens: Annotated[int, typer.Option(help="Reasoning tokens per answer (0: off)", metavar="N")] = 0,
    error_rate: Annotated[float, typer.Option(help="Share of requests answered 500", metavar="SHARE")] = 0.0,
    drop_rate: Annotated[float, typer.Option(help="Share of streams cut mid-way", metavar="SHARE")] = 0.0,
    slow_start: Annotated[float, typer.Option(help="Extra seconds before the first byte", metavar="SECONDS")] = 0.0,
    time_scale: Annotated[float, typer.Option(help="Multiply every delay (0: no delays)", metavar="FACTOR")] = 1.0,
) -> None:
    """Run a simulated vLLM worker."""
    from gateway.cli.fakes import serve_simulated_worker

    require_free_port(host, port, "the simulated worker")
    serve_simulated_worker(host, port, model=model, kv_capacity_tokens=kv_capacity, block_size=block_size,
                           prefill_tokens_per_s=prefill_speed, decode_tokens_per_s=decode_speed,
                           max_running=max_running, reasoning=reasoning_tokens > 0, reasoning_tokens=reasoning_tokens,
                           error_rate=error_rate, drop_rate=drop_rate, slow_start_s=slow_start, time_scale=time_scale,
                           worker_id=f"sim-{port}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(metavar="REVISION")] = "head") -> None:
    """Apply the schema migrations."""
    from gateway.db.engine import upgrade_sync

    setup_logging("WARNING")
    settings = cli_settings()
    announce_database(settings)
    upgrade_sync(settings.sqlalchemy_url, revision)
    typer.echo(f"database at {revision}")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(sim)
    app.add_typer(db_app, name="db")
