"""The async SQL engine and schema migrations (Alembic), for PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

import migrations

# What a query raises while the database cannot be answering: PostgreSQL down (a refused connect is a plain
# OSError from asyncpg), a connection dropped mid-query (DBAPIError, connection invalidated), a server
# shutting down or starting up, too many connections, a connect timeout; SQLite missing or locked
# (OperationalError). Catch these, then ask ``unreachable`` (a DBAPIError may also be a real error).
DB_ERRORS: tuple[type[Exception], ...] = (OSError, TimeoutError, DBAPIError, asyncpg.PostgresError,
                                          asyncpg.InterfaceError)
_DRIVER_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                       asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError)


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (one of ``DB_ERRORS``) says the database is unreachable rather than the query wrong."""
    if isinstance(exc, _DRIVER_UNREACHABLE):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        driver = exc.orig.__cause__ if exc.orig is not None else None  # asyncpg's own, under the adapter's
        return isinstance(driver, _DRIVER_UNREACHABLE)
    return False


def describe(exc: BaseException) -> str:
    """A log line's account of a database failure: the driver's message, never the statement or its values."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig.__cause__ or exc.orig
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:300]


# Connections per engine (per process, and a second engine where the usage API has a read URL).
POOL_SIZE = 10
POOL_OVERFLOW = 20
# The URL's query parameter saying a transaction-pooling proxy (PgBouncer, pool_mode=transaction) stands
# between us and PostgreSQL; Settings.sqlalchemy_url adds it when GATEWAY_DATABASE_PGBOUNCER is set.
PGBOUNCER_PARAMETER = "pgbouncer"
_TRUE = frozenset({"1", "true", "yes", "on"})


def make_engine(url: str) -> AsyncEngine:
    """The engine, with ``hide_parameters``: a failed statement's error (and SQLAlchemy's own log lines) shows
    the statement, never its values (an organisation's cache salt, a key's secret hash)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # aiosqlite logs every call with its arguments at DEBUG: never below INFO.
        quiet = logging.getLogger("aiosqlite")
        quiet.setLevel(max(quiet.level, logging.INFO))
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        _sqlite_pragmas(engine.sync_engine)
        return engine
    # A connection attempt or a statement that hangs (a failover, a host dropping packets) fails in bounded
    # time, so the background writers retry instead of waiting on it. Pool: POOL_SIZE kept, POOL_OVERFLOW
    # more under a burst (docs/operations.md sizes them per process).
    target, driver_args = connection_options(url)
    engine = create_async_engine(target, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_pre_ping=True,
                                 hide_parameters=True,
                                 connect_args={"timeout": 5, "command_timeout": 60, **driver_args})
    event.listen(engine.sync_engine, "handle_error", _drop_row_values)
    return engine


def connection_options(url: str) -> tuple[URL, dict[str, object]]:
    """The URL to connect to (without our ``pgbouncer`` parameter) and the asyncpg arguments it asks for.

    Behind a transaction-pooling proxy each transaction may run on another server connection, and one
    server connection serves many clients in turn: a named prepared statement made on one is missing on the
    next ("prepared statement __asyncpg_stmt_1__ does not exist") or already there from another client
    ("... already exists"). With ``pgbouncer=true`` neither asyncpg nor SQLAlchemy caches statements, and
    every statement is prepared unnamed, within the transaction that runs it (SQLAlchemy opens one before
    the first statement, pings included), so nothing outlives the transaction on the server connection.
    The gateway keeps no other session state (no session advisory locks, SET, LISTEN, temporary tables or
    server-side cursors), so this is all a transaction pool needs."""
    parsed = make_url(url)
    flag = parsed.query.get(PGBOUNCER_PARAMETER)
    if flag is None:
        return parsed, {}
    parsed = parsed.difference_update_query([PGBOUNCER_PARAMETER])
    values = flag if isinstance(flag, tuple) else (flag,)
    if not any(v.lower() in _TRUE for v in values):
        return parsed, {}
    return parsed, {"statement_cache_size": 0, "prepared_statement_cache_size": 0,
                    "prepared_statement_name_func": _unnamed_statement}


def _unnamed_statement() -> str:
    """PostgreSQL's unnamed statement (asyncpg prepares ``""`` as such): replaced by the next one prepared on
    the connection, so none piles up on a server connection the proxy shares."""
    return ""


_ARGUMENT_VALUE = re.compile(r"(invalid input for query argument \$\d+): .*", re.DOTALL)


def _drop_row_values(context: ExceptionContext) -> None:
    """What ``hide_parameters`` misses: PostgreSQL's DETAIL quotes the row ("Failing row contains (...)",
    "Key (lookup)=(...)"), and asyncpg's message for a value it cannot encode quotes the value; asyncpg's error
    is chained under SQLAlchemy's, so every traceback would print them. Drop both."""
    driver = context.original_exception.__cause__
    if not isinstance(driver, asyncpg.PostgresError):
        return
    driver.detail = None
    if isinstance(driver, asyncpg.DataError):
        for exc in (driver, context.original_exception, context.sqlalchemy_exception):
            if exc is not None and exc.args and isinstance(exc.args[0], str):
                exc.args = (_ARGUMENT_VALUE.sub(r"\1: value omitted", exc.args[0]), *exc.args[1:])


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: object, _record: object) -> None:
        cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_sync(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``; blocking (call through ``asyncio.to_thread`` from async code)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade_sync, url, revision)
