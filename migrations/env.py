"""Alembic environment: runs migrations through the async engine (asyncpg or aiosqlite)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from billing.ledger.ledger_tables import LedgerBase
from gateway.db.connect_options import connect_options
from gateway.db.gateway_tables import Base

target_metadata = [Base.metadata, LedgerBase.metadata]


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    # A failed migration logs no values; behind PgBouncer (?pgbouncer=true) no statement is named or cached.
    if url.startswith("sqlite"):
        engine = create_async_engine(url, hide_parameters=True)
    else:
        options = connect_options(url)
        engine = create_async_engine(options.url, hide_parameters=True, connect_args=options.driver_args)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set"
    asyncio.run(_run_async(url))


def run_migrations_offline() -> None:
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
