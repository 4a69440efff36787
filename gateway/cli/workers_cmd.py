"""``gateway workers ...``: add, list and remove the workers stored in SQL (every replica picks a change up
within ``GATEWAY_WORKER_SYNC_INTERVAL_S``), through the same WorkerService as ``/admin/workers``."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.context import ServiceContext, run_with_services
from gateway.cli.table import render_table
from gateway.routing.worker import Worker

workers_app = typer.Typer(help="Inference workers added at runtime", no_args_is_help=True)


def _rows(workers: list[Worker]) -> str:
    return render_table(["ID", "URL", "SOURCE", "HEALTHY", "MODELS"],
                        [[w.id, w.url, w.source, "yes" if w.healthy else f"no ({w.last_error or 'no answer'})",
                          ",".join(sorted(w.models)) or "-"] for w in workers])


@workers_app.command("add")
def workers_add(url: Annotated[str, typer.Argument(help="The worker's base URL (http://host:port)", metavar="URL")]
                ) -> None:
    """Add a worker (vLLM or SGLang, OpenAI-compatible); it is checked at once and used once healthy."""
    async def work(ctx: ServiceContext) -> str:
        return _rows([await ctx.workers.add(url)])

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
