"""``gateway db partitions ...``: the usage ledger's monthly partitions on PostgreSQL (list, ensure, prune);
on SQLite the ledger is one plain table and each verb says so."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from billing.ledger.partitions import LedgerPartitions, add_months, partition_name
from gateway.cli.context import ServiceContext, run_with_services, setup_logging

partitions_app = typer.Typer(help="The usage ledger's monthly partitions (PostgreSQL)", no_args_is_help=True)


async def _partitioned(ctx: ServiceContext) -> LedgerPartitions | None:
    partitions = LedgerPartitions(ctx.engine)
    if await partitions.partitioned():
        return partitions
    typer.echo("the ledger is not partitioned on this database (PostgreSQL only; SQLite keeps one table)")
    return None


@partitions_app.command("list")
def partitions_list() -> None:
    """Each month that has a partition, oldest first."""
    async def work(ctx: ServiceContext) -> int:
        partitions = await _partitioned(ctx)
        if partitions is not None:
            months = await partitions.months()
            for month in months:
                typer.echo(f"{partition_name(month)}  {month:%Y-%m-%d} .. {add_months(month, 1):%Y-%m-%d}")
            typer.echo(f"{len(months)} monthly partitions")
        return 0

    setup_logging("WARNING")
    run_with_services(work)


@partitions_app.command("ensure")
def partitions_ensure(
    months_ahead: Annotated[int | None, typer.Option(help="Months ahead of this one (default "
                                                          "GATEWAY_LEDGER_PARTITIONS_AHEAD)", metavar="N",
                                                     min=0)] = None,
) -> None:
    """Create the partitions of this month and the months ahead (the ledger writers do it hourly)."""
    async def work(ctx: ServiceContext) -> int:
        partitions = await _partitioned(ctx)
        if partitions is not None:
            ahead = ctx.settings.ledger_partitions_ahead if months_ahead is None else months_ahead
            created = await partitions.ensure(datetime.now(UTC), ahead)
            typer.echo(f"{len(created)} partitions created{': ' + ', '.join(created) if created else ''}")
        return 0

    setup_logging("WARNING")
    run_with_services(work)


@partitions_app.command("prune")
def partitions_prune(
    retention_months: Annotated[int | None, typer.Option(help="Months kept before this one (default "
                                                              "GATEWAY_LEDGER_RETENTION_MONTHS; 0: keep all)",
                                                         metavar="N", min=0)] = None,
) -> None:
    """Drop the partitions past the retention whose rollups match their rows; say why any other is kept."""
    async def work(ctx: ServiceContext) -> int:
        partitions = await _partitioned(ctx)
        if partitions is None:
            return 0
        months = ctx.settings.ledger_retention_months if retention_months is None else retention_months
        report = await partitions.prune(datetime.now(UTC), months, require_synced=bool(ctx.settings.stripe_api_key))
        for name, why in report.kept:
            typer.echo(f"kept {name}: {why}")
        names = ": " + ", ".join(report.dropped) if report.dropped else ""
        typer.echo(f"{len(report.dropped)} partitions dropped{names}")
        return len(report.kept)

    setup_logging("WARNING")
    if run_with_services(work):
        raise typer.Exit(1)
