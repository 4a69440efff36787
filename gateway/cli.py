"""The ``gateway`` command: thin verbs over the same services the HTTP API uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from typing import Annotated

import typer

from gateway.cli_limits import register as register_limit_verbs
from gateway.config import Settings

app = typer.Typer(help="LLM API gateway", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database schema", no_args_is_help=True)
keys_app = typer.Typer(help="Organisations and API keys", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
register_limit_verbs(app, keys_app)
billing_app = typer.Typer(help="Billing: Stripe meter sync and reconciliation", no_args_is_help=True)
app.add_typer(billing_app, name="billing")


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default GATEWAY_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default GATEWAY_PORT)")] = None,
    processes: Annotated[int, typer.Option(help="Server processes")] = 1,
) -> None:
    """Run the gateway."""
    from gateway.server import serve as serve_gateway

    _logging()
    serve_gateway(Settings(), host, port, processes)


@app.command()
def sim(
    port: Annotated[int, typer.Option(help="Port")] = 8001,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    model: Annotated[str, typer.Option(help="Model name served")] = "grok-code-fast-1",
    kv_capacity: Annotated[int, typer.Option(help="KV cache capacity in tokens")] = 262144,
    block_size: Annotated[int, typer.Option(help="KV block size in tokens")] = 16,
    prefill_speed: Annotated[float, typer.Option(help="Prefill tokens per second")] = 20000.0,
    decode_speed: Annotated[float, typer.Option(help="Output tokens per second per sequence")] = 200.0,
    max_running: Annotated[int, typer.Option(help="Max running sequences")] = 64,
    reasoning_tokens: Annotated[int, typer.Option(help="Reasoning tokens per answer (0: off)")] = 0,
    error_rate: Annotated[float, typer.Option(help="Share of requests answered 500")] = 0.0,
    drop_rate: Annotated[float, typer.Option(help="Share of streams cut mid-way")] = 0.0,
    slow_start: Annotated[float, typer.Option(help="Extra seconds before the first byte")] = 0.0,
    time_scale: Annotated[float, typer.Option(help="Multiply every delay (0: no delays)")] = 1.0,
) -> None:
    """Run a simulated vLLM worker."""
    from gateway.sim.config import SimConfig
    from gateway.sim.run import serve_sim

    config = SimConfig(model=model, kv_capacity_tokens=kv_capacity, block_size=block_size,
                       prefill_tokens_per_s=prefill_speed, decode_tokens_per_s=decode_speed, max_running=max_running,
                       reasoning=reasoning_tokens > 0, reasoning_tokens=reasoning_tokens, error_rate=error_rate,
                       drop_rate=drop_rate, slow_start_s=slow_start, time_scale=time_scale,
                       worker_id=f"sim-{port}")
    serve_sim(config, host, port)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the schema migrations."""
    from gateway.db.engine import upgrade_sync

    settings = Settings()
    upgrade_sync(settings.sqlalchemy_url, revision)
    typer.echo(f"database at {revision}: {settings.sqlalchemy_url.split('@')[-1]}")


@contextlib.asynccontextmanager
async def _key_service(settings: Settings) -> AsyncIterator[object]:
    from gateway.db import engine as db
    from gateway.services.keys import KeyService

    await db.upgrade(settings.sqlalchemy_url)
    engine = db.make_engine(settings.sqlalchemy_url)
    try:
        yield KeyService(db.sessionmaker(engine))
    finally:
        await engine.dispose()


async def create_key(settings: Settings, org: str, name: str) -> str:
    from gateway.services.keys import KeyService

    async with _key_service(settings) as svc:
        assert isinstance(svc, KeyService)
        org_view = await svc.get_or_create_org(org)
        return (await svc.create_key(org_view.id, name)).key


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Option(help="Organisation name (created if missing)")],
    name: Annotated[str, typer.Option(help="Key name")] = "default",
) -> None:
    """Create an API key and print it (shown only this once)."""
    typer.echo(asyncio.run(create_key(Settings(), org, name)))


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never their secrets)."""
    from gateway.services.keys import KeyService

    async def run() -> None:
        async with _key_service(Settings()) as svc:
            assert isinstance(svc, KeyService)
            for k in await svc.list_keys():
                state = "revoked" if k.revoked_at else "active"
                typer.echo(f"{k.id}\t{k.org_id}\t{k.name}\t{k.prefix}…\t{state}")

    asyncio.run(run())


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key (every replica stops accepting it within the key cache TTL)."""
    from gateway.services.keys import KeyService

    async def run() -> None:
        async with _key_service(Settings()) as svc:
            assert isinstance(svc, KeyService)
            await svc.revoke_key(key_id)

    asyncio.run(run())
    typer.echo(f"revoked {key_id}")


@contextlib.asynccontextmanager
async def _billing_service(settings: Settings) -> AsyncIterator[object]:
    from gateway.db import engine as db
    from gateway.services.billing import BillingService

    await db.upgrade(settings.sqlalchemy_url)
    engine = db.make_engine(settings.sqlalchemy_url)
    try:
        yield BillingService(db.sessionmaker(engine), settings)
    finally:
        await engine.dispose()


@billing_app.command("sync")
def billing_sync() -> None:
    """Send unreported usage to Stripe as meter events (safe to run twice: nothing is sent twice)."""
    from gateway.services.billing import BillingService, StripeNotConfigured

    async def run() -> None:
        async with _billing_service(Settings()) as svc:
            assert isinstance(svc, BillingService)
            report = await svc.stripe_sync()
        typer.echo(f"rows claimed {report.rows_claimed}, events created {report.events_created}, sent "
                   f"{report.sent}, already delivered {report.duplicates}, retries {report.retried}, "
                   f"failed {report.failed}, still pending {report.pending}")
        if report.pending:
            raise typer.Exit(1)

    _logging("WARNING")
    try:
        asyncio.run(run())
    except StripeNotConfigured as exc:
        typer.echo(f"Stripe is not configured: {exc}", err=True)
        raise typer.Exit(2) from None


@billing_app.command("reconcile")
def billing_reconcile(
    days: Annotated[int, typer.Option(help="Days back from today (UTC) to compare")] = 30,
) -> None:
    """Per customer, meter and day: ledger totals against what was sent and what Stripe reports."""
    from datetime import UTC, datetime, timedelta

    from gateway.services.billing import BillingService, StripeNotConfigured

    async def run() -> int:
        async with _billing_service(Settings()) as svc:
            assert isinstance(svc, BillingService)
            rows = await svc.stripe_reconcile(datetime.now(UTC) - timedelta(days=days))
        typer.echo(f"{'customer':<24} {'day':<10} {'meter':<7} {'ledger':>14} {'sent':>14} {'stripe':>14}  status")
        for r in rows:
            status = "ok" if r.matches else "MISMATCH"
            typer.echo(f"{r.customer_id:<24} {r.day.isoformat():<10} {r.meter:<7} {r.ledger:>14} {r.sent:>14} "
                       f"{r.stripe:>14}  {status}")
        mismatches = sum(1 for r in rows if not r.matches)
        typer.echo(f"{len(rows)} rows, {mismatches} mismatched")
        return mismatches

    _logging("WARNING")
    try:
        mismatched = asyncio.run(run())
    except StripeNotConfigured as exc:
        typer.echo(f"Stripe is not configured: {exc}", err=True)
        raise typer.Exit(2) from None
    if mismatched:
        raise typer.Exit(1)


@billing_app.command("writer")
def billing_writer(
    writers: Annotated[int, typer.Option(help="Stream consumers in this process")] = 2,
) -> None:
    """Move usage records from the Redis stream into the SQL ledger (a standalone ledger writer; run
    replicas with GATEWAY_LEDGER_WRITERS=0 to keep that work off the request-serving processes)."""
    from gateway.ledger_writer import run_writer

    _logging()
    settings = Settings()
    if not settings.redis_url:
        typer.echo("the standalone writer reads the Redis stream: set GATEWAY_REDIS_URL", err=True)
        raise typer.Exit(2)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_writer(settings, writers))


@billing_app.command("prices-from-litellm")
def billing_prices_from_litellm(
    models: Annotated[list[str], typer.Argument(help="Model names as LiteLLM knows them")],
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
    port: Annotated[int, typer.Option(help="Port")] = 12111,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
) -> None:
    """Run the local Stripe-compatible test server (meter events, summaries) with the gateway's meters."""
    import uvicorn

    from billing.stripe.testserver import StripeTestServer

    settings = Settings()
    app_ = StripeTestServer([settings.stripe_meter_input, settings.stripe_meter_cached, settings.stripe_meter_output])
    typer.echo(f"Stripe test server on http://{host}:{port} (GATEWAY_STRIPE_API_BASE), any sk_test_... key")
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Gateway port")] = 8080,
    workers: Annotated[int, typer.Option(help="Simulated workers")] = 3,
    first_worker_port: Annotated[int, typer.Option(help="Port of the first simulated worker")] = 8101,
) -> None:
    """Start simulated workers and the gateway on the embedded default, with a demo key."""
    from gateway.demo import run_demo

    _logging("WARNING")
    admin_key = os.environ.get("GATEWAY_ADMIN_KEY") or "admin-" + secrets.token_urlsafe(12)
    run_demo(port=port, n_workers=workers, first_worker_port=first_worker_port, admin_key=admin_key)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
