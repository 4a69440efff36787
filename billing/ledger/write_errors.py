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
    asyncpg.InternalClientError,  # a connection left mid-operation by a cut ("another operation is in progress")
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


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it (SQLAlchemy wraps the driver's adapted error, which wraps the
    driver's own)."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(found) < 8:
        found.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return found


def _kinds(exc: BaseException) -> list[type[BaseException]]:
    """The classes along the chain, and the driver's class an error re-raised without its values
    names (``driver_class``, see ``LedgerWriteError``)."""
    kinds: list[type[BaseException]] = []
    for link in _chain(exc):
        kinds.append(type(link))
        driver = getattr(link, "driver_class", None)
        if isinstance(driver, type) and issubclass(driver, BaseException):
            kinds.append(driver)
    return kinds


def is_transient(exc: BaseException) -> bool:
    if any(isinstance(link, sa_exc.DBAPIError) and link.connection_invalidated for link in _chain(exc)):
        return True
    kinds = _kinds(exc)
    return any(issubclass(k, TRANSIENT) for k in kinds) and not any(issubclass(k, RECORD) for k in kinds)


def is_record_error(exc: BaseException) -> bool:
    return not is_transient(exc) and any(issubclass(k, RECORD) for k in _kinds(exc))
