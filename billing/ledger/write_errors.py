"""Which failures of a ledger write a retry can cure, and which come from the records themselves.

A *transient* failure (the database unreachable, a connection terminated, a failover under way) keeps
the batch pending and the writer retries it with backoff. A *record* failure (a value the columns
cannot hold) would fail forever: the writer isolates the records that cause it and moves them to the
dead letters, so they never block the records behind them.
"""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy import exc as sa_exc

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, refused connections, resets
    TimeoutError,
    asyncpg.PostgresConnectionError,  # connection lost, cannot connect now
    asyncpg.InterfaceError,  # the connection was closed under the writer
    asyncpg.exceptions.AdminShutdownError,  # pg_terminate_backend, a fast shutdown
    asyncpg.exceptions.CannotConnectNowError,  # the server is starting or recovering
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # writing to a standby during a failover
    asyncpg.exceptions.InsufficientResourcesError,
    sqlite3.OperationalError,  # "database is locked"
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
)

RECORD: tuple[type[BaseException], ...] = (
    asyncpg.DataError,  # out of range, too long for its column, bad encoding
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,  # a value of a type SQLite cannot bind
    OverflowError,  # an integer beyond 64 bits
    ValueError,
    TypeError,
    sa_exc.DataError,
    sa_exc.IntegrityError,
)


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own error behind a wrapper (the writer re-raises driver errors without their values,
    ``raise LedgerWriteError(...) from exc``; SQLAlchemy wraps them in DBAPIError)."""
    seen = 0
    while exc.__cause__ is not None and isinstance(exc, sa_exc.SQLAlchemyError) and seen < 5:
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return exc
        exc = exc.__cause__
        seen += 1
    return exc


def is_transient(exc: BaseException) -> bool:
    exc = _driver_error(exc)
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT) and not isinstance(exc, RECORD)


def is_record_error(exc: BaseException) -> bool:
    return isinstance(_driver_error(exc), RECORD) and not is_transient(exc)
