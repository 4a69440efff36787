"""``gateway billing ...``: the Stripe meter sync and reconciliation (BillingService), the standalone ledger
writer, the LiteLLM price-book import and the local Stripe test server."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from billing.ledger.dead_letters import DeadLetters
from billing.ledger.writer import LedgerWriter
from gateway.cli.context import ServiceContext, announce_database, run_with_services, setup_logging
from gateway.config import Settings

billing_app = typer.Typer(help="Billing: Stripe meter sync and reconciliation", no_args_is_help=True)


@billing_app.command("sync")
def billing_sync() -> None:
    """Send unreported usage to Stripe as meter events (safe to run twice: nothing is sent twice)."""
    async def work(ctx: ServiceContext) -> int:
        report = await ctx.billing.stripe_sync()
        typer.echo(f"rows claimed {report.rows_claimed}, events created {report.events_created}, sent "
                   f"{report.sent}, already delivered {report.duplicates}, retries {report.retried}, "
                   f"failed {report.failed}, still pending {report.pending}")
        return report.pending

    setup_logging("WARNING")
    if run_with_services(work):
        raise typer.Exit(1)


@billing_app.command("reconcile")
def billing_reconcile(
    days: Annotated[int, typer.Option(help="Days back from today (UTC) to compare", metavar="DAYS")] = 30,
) -> None:
    """Per customer, meter and day: ledger totals against what was sent and what Stripe reports."""
    async def work(ctx: ServiceContext) -> int:
        rows = await ctx.billing.stripe_reconcile(datetime.now(UTC) - timedelta(days=days))
        typer.echo(f"{'customer':<24} {'day':<10} {'meter':<7} {'ledger':>14} {'sent':>14} {'stripe':>14}  status")
        for r in rows:
            status = "ok" if r.matches else "MISMATCH"
            typer.echo(f"{r.customer_id:<24} {r.day.isoformat():<10} {r.meter:<7} {r.ledger:>14} {r.sent:>14} "
                       f"{r.stripe:>14}  {status}")
        mismatches = sum(1 for r in rows if not r.matches)
        typer.echo(f"{len(rows)} rows, {mismatches} mismatched")
        return mismatches

    setup_logging("WARNING")
    if run_with_services(work):
        raise typer.Exit(1)


dead_app = typer.Typer(help="Usage records the ledger could not store, kept with the reason", no_args_is_help=True)
billing_app.add_typer(dead_app, name="dead-letters")


@dead_app.command("list")
def dead_letters_list(
    limit: Annotated[int, typer.Option(help="Show at most this many, oldest first", metavar="N")] = 100,
) -> None:
    """The dead letters: request id, when, and why the ledger refused the record."""
    async def work(ctx: ServiceContext) -> int:
        letters = await DeadLetters(ctx.engine).oldest(limit)
        typer.echo(f"{'id':<40} {'since':<20} reason")
        for d in letters:
            since = d.created_at.strftime("%Y-%m-%d %H:%M:%S") if d.created_at else "-"
            typer.echo(f"{d.id:<40} {since:<20} {d.reason}")
        typer.echo(f"{len(letters)} dead letters shown")
        return 0

    setup_logging("WARNING")
    run_with_services(work)


@dead_app.command("replay")
def dead_letters_replay(
    ids: Annotated[list[str] | None, typer.Argument(help="Request ids to replay (default: all)", metavar="ID")] = None,
) -> None:
    """Write dead letters into the ledger again (after fixing their cause); those written are removed,
    those that still fail stay with their new reason. The ledger drops a record it already holds."""
    async def work(ctx: ServiceContext) -> int:
        written, failed = await DeadLetters(ctx.engine).replay(LedgerWriter(ctx.engine), ids or None)
        for d in failed:
            typer.echo(f"still failing: {d.id}: {d.reason}")
        typer.echo(f"{written} written into the ledger, {len(failed)} still failing")
        return len(failed)

    setup_logging("WARNING")
    if run_with_services(work):
        raise typer.Exit(1)


@billing_app.command("writer")
def billing_writer(
    writers: Annotated[int, typer.Option(help="Stream consumers in this process", metavar="N")] = 2,
) -> None:
    """Move usage records from the Redis stream into the SQL ledger (a standalone ledger writer; run
    replicas with GATEWAY_LEDGER_WRITERS=0 to keep that work off the request-serving processes)."""
    from gateway.metering.writer_process import run_writer

    setup_logging()
    settings = Settings()
    if not settings.redis_url:
        typer.echo("the standalone writer reads the Redis stream: set GATEWAY_REDIS_URL", err=True)
        raise typer.Exit(2)
    announce_database(settings)
    if settings.ledger_writer_nice:  # before any thread starts: the SQLite and executor threads inherit it
        try:
            os.nice(settings.ledger_writer_nice)
        except OSError as exc:  # a sandbox that refuses it: billing goes on at the normal priority
            typer.echo(f"could not lower the writer's CPU priority ({exc}); running at the normal one", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_writer(settings, writers))


@billing_app.command("prices-from-litellm")
def billing_prices_from_litellm(
    models: Annotated[list[str], typer.Argument(help="Model names as LiteLLM knows them", metavar="MODEL")],
) -> None:
    """Print a price book file (GATEWAY_PRICE_BOOK_FILE) from LiteLLM's cost map, to review before use.

    Needs the optional extra: pip install 'llm-gateway[litellm]'."""
    import yaml

    from billing.litellm_prices import from_cost_map, load_cost_map

    try:
        book = from_cost_map(load_cost_map(), models)
    except ModuleNotFoundError:
        typer.echo("litellm is not installed: pip install 'llm-gateway[litellm]'", err=True)
        raise typer.Exit(2) from None
    except (KeyError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo("# USD per million tokens, from LiteLLM's cost map: check them against the provider's prices")
    typer.echo(yaml.safe_dump({"models": book}, sort_keys=True).rstrip())


@billing_app.command("stripe-test-server")
def billing_stripe_test_server(
    port: Annotated[int, typer.Option(help="Port", metavar="PORT")] = 12111,
    host: Annotated[str, typer.Option(help="Bind address", metavar="HOST")] = "127.0.0.1",
) -> None:
    """Run the local Stripe-compatible test server (meter events, summaries) with the gateway's meters."""
    from gateway.cli.fakes import serve_stripe_fake
    from gateway.cli.serve_cmd import require_free_port

    settings = Settings()
    require_free_port(host, port, "the Stripe test server")
    typer.echo(f"Stripe test server on http://{host}:{port} (GATEWAY_STRIPE_API_BASE), any sk_test_... key")
    serve_stripe_fake([settings.stripe_meter_input, settings.stripe_meter_cached, settings.stripe_meter_output],
                      host, port)
