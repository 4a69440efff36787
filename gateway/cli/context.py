"""The services a CLI verb works with, built once per command and closed after it: the same service
classes the HTTP API uses, over the same database (which the command names on stderr)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import ConfigError, Settings, load_settings
from gateway.db import engine as db
from gateway.observability.requestlog import REQUEST_LOGGER, RequestLineHandler
from gateway.routing.pool import WorkerPool
from gateway.services.billing import BillingService
from gateway.services.keys import KeyService
from gateway.services.plans import PlanService
from gateway.services.service_errors import NotConfigured, ServiceError
from gateway.services.workers import WorkerService
from gateway.upstream.worker_probe import WorkerProbe

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServiceContext:
    settings: Settings
    engine: AsyncEngine
    keys: KeyService
    plans: PlanService
    billing: BillingService
    workers: WorkerService
    # The configured workers and, after ``workers.sync()``, those added at runtime.
    pool: WorkerPool


def cli_settings() -> Settings:
    """The settings, or one line ``error: <source>: <path>: <reason>`` on stderr and exit code 2."""
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def database_label(settings: Settings) -> str:
    """The database the settings point at, for people: the URL without its driver or password."""
    url = make_url(settings.sqlalchemy_url)
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def announce_database(settings: Settings) -> None:
    """One line on stderr: which database this command uses (stdout stays for its output)."""
    typer.echo(f"database: {database_label(settings)}", err=True)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic tells at INFO of every plugin it sets up, of its SQL dialect and of each migration step, at
    # every start: noise for whoever reads the gateway's log (`gateway db upgrade` says where the schema is).
    for name in ("alembic.runtime.plugins", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The request log: its JSON lines as they are, written in batches (see RequestLineHandler).
    requests = logging.getLogger(REQUEST_LOGGER)
    if not any(isinstance(h, RequestLineHandler) for h in requests.handlers):
        requests.addHandler(RequestLineHandler(sys.stderr))
        requests.propagate = False


@contextlib.asynccontextmanager
async def service_context(settings: Settings | None = None) -> AsyncIterator[ServiceContext]:
    """The services over the database of ``settings`` (migrated to the latest schema first)."""
    settings = settings or cli_settings()
    announce_database(settings)
    await db.upgrade(settings.sqlalchemy_url)
    engine = db.make_engine(settings.sqlalchemy_url)
    sessions = db.sessionmaker(engine)
    probe = WorkerProbe.build(settings)  # for the workers' health checks
    pool = WorkerPool(probe)
    for spec in settings.workers:
        pool.add(spec, "config")
    try:
        yield ServiceContext(settings=settings, engine=engine, keys=KeyService(sessions), plans=PlanService(sessions),
                             billing=BillingService(sessions, settings), workers=WorkerService(sessions, pool),
                             pool=pool)
    finally:
        probe.close()
        await engine.dispose()


def run_with_services(work: Callable[[ServiceContext], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run ``work`` with the services. A service's refusal, or a database that cannot be reached, is one
    line on stderr, ``error: ...``, and exit code 1 (2 where a setting is missing), never a traceback."""
    settings = settings or cli_settings()

    async def main() -> T:
        async with service_context(settings) as ctx:
            return await work(ctx)

    try:
        return asyncio.run(main())
    except ServiceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2 if isinstance(exc, NotConfigured) else 1) from None
    except (DBAPIError, OSError) as exc:
        reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).strip().splitlines()[0]
        typer.echo(f"error: the database {database_label(settings)} cannot be used: {reason}", err=True)
        raise typer.Exit(1) from None
