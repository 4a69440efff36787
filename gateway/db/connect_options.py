"""What a PostgreSQL URL asks of the engine beyond the address: pool sizes, and a transaction-pooling proxy.

The options travel on the driver URL as query parameters, so every process (replicas, the ledger writer,
the CLI, the migrations) gets them from the one place that builds the URL (``Settings.sqlalchemy_url``
adds them from ``GATEWAY_DATABASE_POOL_SIZE``, ``GATEWAY_DATABASE_MAX_OVERFLOW`` and
``GATEWAY_DATABASE_PGBOUNCER``; a URL may also carry them itself). They are removed before connecting:
asyncpg would take them for server settings.

- ``pool_size`` (default 10) connections kept per engine, ``max_overflow`` (default 20) more under a burst.
- ``pgbouncer=true``: PgBouncer (or another proxy) in transaction pool mode. Each transaction
  may run on another server connection, and one server connection serves many clients in turn: a named
  prepared statement made on one is missing on the next ("prepared statement __asyncpg_stmt_1__ does not
  exist") or already there from another client ("... already exists"). With it neither asyncpg nor
  SQLAlchemy caches statements, and every statement is prepared unnamed within the transaction that runs it
  (SQLAlchemy opens one before the first statement, pings included), so nothing is left behind on the
  server connection. The gateway keeps no other session state (no session advisory locks, SET, LISTEN,
  temporary tables, WITH HOLD or server-side cursors), so that is all a transaction pool needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import URL, make_url

POOL_SIZE = 10
MAX_OVERFLOW = 20
PGBOUNCER = "pgbouncer"
_POOL_SIZE = "pool_size"
_MAX_OVERFLOW = "max_overflow"
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class ConnectOptions:
    url: URL  # without the parameters below
    pool_size: int = POOL_SIZE
    max_overflow: int = MAX_OVERFLOW
    driver_args: dict[str, object] = field(default_factory=dict)  # asyncpg.connect's (through SQLAlchemy)


def connect_options(url: str) -> ConnectOptions:
    parsed = make_url(url)
    query = parsed.query
    options = ConnectOptions(
        parsed.difference_update_query([PGBOUNCER, _POOL_SIZE, _MAX_OVERFLOW]),
        pool_size=_number(query.get(_POOL_SIZE), POOL_SIZE, least=1),
        max_overflow=_number(query.get(_MAX_OVERFLOW), MAX_OVERFLOW, least=0))
    if _last(query.get(PGBOUNCER)).lower() in _TRUE:
        return ConnectOptions(options.url, options.pool_size, options.max_overflow, {
            "statement_cache_size": 0, "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unnamed_statement})
    return options


def _last(value: str | tuple[str, ...] | None) -> str:
    if value is None:
        return ""
    return value[-1] if isinstance(value, tuple) else value


def _number(value: str | tuple[str, ...] | None, default: int, least: int) -> int:
    text = _last(value)
    if not text:
        return default
    number = int(text)  # ValueError: not a number, said at start
    if number < least:
        raise ValueError(f"a database URL's pool option must be at least {least}, not {number}")
    return number


def _unnamed_statement() -> str:
    """PostgreSQL's unnamed statement (asyncpg prepares ``""`` as such): replaced by the next one prepared on
    the connection, so none piles up on a server connection the proxy shares."""
    return ""
