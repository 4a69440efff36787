"""``gateway workers ...``: add, list and remove the workers stored in SQL (every replica picks a change up
within ``GATEWAY_WORKER_SYNC_INTERVAL_S``), through the same WorkerService as ``/admin/workers``."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.context import ServiceContext, run_with_services
from gateway.cli.table import render_table
from gateway.routing.worker import Worker

workers_app = typer.Typer(help="Inference workers added at runtime", no_args_is_help=True)


def _state(w: Worker) -> str:
    return "yes" if w.healthy else f"{'MISCONFIGURED' if w.misconfigured else 'no'} ({w.last_error or 'no answer'})"


def _rows(workers: list[Worker]) -> str:
    return render_table(["ID", "URL", "SOURCE", "HEALTHY", "MODELS", "KEY"],
                        [[w.id, w.url, w.source, _state(w), ",".join(sorted(w.models)) or "-", w.key_source or "-"]
                         for w in workers])


def _headers(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{item!r} is not NAME:VALUE", param_hint="--header")
        out[name.strip()] = value.strip()
    return out


@workers_app.command("add")
def workers_add(url: Annotated[str, typer.Argument(help="The worker's base URL (http://host:port)", metavar="URL")],
                api_key: Annotated[str | None, typer.Option(
                    help="os.environ/NAME: the variable holding the worker's key on every replica",
                    metavar="os.environ/NAME")] = None,
                header: Annotated[list[str] | None, typer.Option(
                    help="An extra header sent to this worker, NAME:VALUE (repeatable)", metavar="NAME:VALUE")] = None,
                models: Annotated[str | None, typer.Option(
                    help="Models it serves, comma-separated (default: read from its /v1/models)",
                    metavar="A,B")] = None,
                ) -> None:
    """Add a worker (vLLM or SGLang, OpenAI-compatible); it is checked at once and used once healthy."""
    extra = _headers(header or [])
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None

    async def work(ctx: ServiceContext) -> str:
        return _rows([await ctx.workers.add(url, api_key, extra, names)])

    typer.echo(run_with_services(work))


@workers_app.command("list")
def workers_list() -> None:
    """List the workers: from GATEWAY_WORKERS (source config) and added at runtime (source admin), checked now."""
    async def work(ctx: ServiceContext) -> str:
        await ctx.workers.sync()
        await ctx.pool.check_all()
        return _rows(ctx.pool.all())

    typer.echo(run_with_services(work))


@workers_app.command("remove")
def workers_remove(worker_id: Annotated[str, typer.Argument(help="Worker id (see list)", metavar="ID")]) -> None:
    """Remove a worker added at runtime (configured ones are removed from GATEWAY_WORKERS)."""
    async def work(ctx: ServiceContext) -> str:
        await ctx.workers.sync()
        await ctx.workers.remove(worker_id)
        return f"removed {worker_id}"

    typer.echo(run_with_services(work))
