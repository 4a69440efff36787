"""The request path's shape, counted (never timed): Redis round trips and commands, SQL statements.

With every stage on (auth, a plan with every kind of limit for the organisation and the key, a monthly
budget, prefix routing, metering), a request makes exactly one Redis round trip before the upstream
call and one after it, sends a fixed set of script calls in them, and runs no SQL. A change that adds
a round trip, a command or a statement to the request path fails here.

Round trips are counted by a TCP relay between the gateway and a private redis-server: a round trip is
a burst of bytes from the client after the server last answered. Background work that would also talk
to Redis or SQL during the counted requests is switched off or slowed down (ledger writers, worker
sync, price-plan refresh, key-cache refresh), so whatever the counters see is the request path.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI
from sqlalchemy import event

from tests.conftest import Backend, ServedGateway, gateway_settings, serve_gateway
from tests.limits.helpers import call, new_key, org_with_plan
from tests.private_redis import private_redis

MODEL = "grok-code-fast-1"
_COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z|]+)\r\n")
# Nothing in the background during the counted requests (every interval far beyond the test).
# (The usage stream's epoch watcher runs every second whatever the settings: see below.)
QUIET = {"ledger_writers": 0, "worker_sync_interval_s": 3600.0, "billing_refresh_interval_s": 3600.0,
         "key_cache_ttl_s": 3600.0, "health_interval_s": 3600.0}


@dataclass
class _Connection:
    number: int
    trips: list[list[str]] = field(default_factory=list)  # the command names of each round trip
    client_last: bool = False
    pending: bytes = b""


class CountingRelay:
    """TCP relay in front of Redis that records every connection's round trips and their commands."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self.connections: list[_Connection] = []
        self.log: list[tuple[int, list[str]]] = []  # every round trip in order: (connection, commands)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def trips(self) -> list[tuple[int, list[str]]]:
        return list(self.log)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        conn = _Connection(len(self.connections))
        self.connections.append(conn)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_client: bool) -> None:
            try:
                while data := await src.read(1 << 16):
                    if from_client:
                        if not conn.client_last:
                            conn.trips.append([])
                            self.log.append((conn.number, conn.trips[-1]))
                        conn.client_last = True
                        # Command names at the start of each RESP array (a command split across reads
                        # is read once the rest arrived).
                        buf = conn.pending + data
                        last = 0
                        for m in _COMMAND.finditer(buf):
                            conn.trips[-1].append(m.group(1).decode().upper())
                            last = m.end()
                        conn.pending = buf[last:][-64:]
                    else:
                        conn.client_last = False
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        task = asyncio.ensure_future(asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class SqlCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)


def _unlisten(gw: ServedGateway, sql: SqlCounter) -> None:
    engine = gw.app.runtime.engine.sync_engine
    if event.contains(engine, "before_cursor_execute", sql):
        event.remove(engine, "before_cursor_execute", sql)


async def _principal_with_every_stage(gw: ServedGateway) -> str:
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gw.url, "shape-" + secrets.token_hex(3), rpm=100_000, tpm=10**9,
                                     tpd=10**10, concurrency=1000, key_rpm=50_000, key_tpm=10**9,
                                     key_concurrency=500)
        status, body, _ = await call(http, "PUT", gw.url + f"/admin/orgs/{org}/budget",
                                     json={"monthly_limit_usd": "1000.00"})
        assert status == 200, body
        return str((await new_key(http, gw.url, org))["key"])


async def _requests(client: AsyncOpenAI, n: int, stream: bool) -> None:
    for _ in range(n):
        messages = [{"role": "system", "content": "You are terse. " * 80}, {"role": "user", "content": "hi"}]
        if stream:
            chunks = await client.chat.completions.create(model=MODEL, messages=messages,  # type: ignore[arg-type]
                                                          max_tokens=8, stream=True)
            async for _ in chunks:
                pass
        else:
            reply = await client.chat.completions.create(model=MODEL, messages=messages,  # type: ignore[arg-type]
                                                         max_tokens=8)
            assert reply.usage is not None


@pytest.mark.parametrize(("stream", "groups"), [(False, 1), (True, 1), (False, 4)],
                         ids=["json", "stream", "json-4-worker-groups"])
async def test_one_round_trip_before_and_one_after_and_no_sql(pg_database: str, sims: Any, stream: bool,
                                                              groups: int) -> None:
    async with private_redis() as redis_server:
        relay = CountingRelay(redis_server.port)
        await relay.start()
        backend = Backend("shared", pg_database, relay.url, "gwtest-shape-" + secrets.token_hex(3))
        gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], routing_groups=groups, **QUIET))
        sql = SqlCounter()
        try:
            key = await _principal_with_every_stage(gw)
            async with AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
                await _requests(client, 2, stream)  # warm: the key cache, the scripts (EVAL after NOSCRIPT)
                assert gw.app.runtime.key_cache.stats.stale_served == 0
                event.listen(gw.app.runtime.engine.sync_engine, "before_cursor_execute", sql)
                before = len(relay.trips())
                await _requests(client, 5, stream)
                trips = relay.trips()[before:]
        finally:
            _unlisten(gw, sql)
            await gw.stop()
            await relay.stop()

    assert sql.statements == []
    # Per request, before the upstream call: metering's nothing, the limiter's reserve, the budget's
    # reserve and the router's lookup; after it: the limiter's settle, the budget's settle, the usage
    # record onto the stream and the router's record. Each side is ONE round trip.
    # The request path's round trips go over the lean client's one connection; on others only the
    # usage stream's epoch watcher (a GET once a second, in the background) may show up meanwhile.
    lean = {number for number, commands in trips if "EVALSHA" in commands}
    assert len(lean) == 1, trips
    assert all(commands == ["GET"] for number, commands in trips if number not in lean), trips
    trips = [t for t in trips if t[0] in lean]
    assert len(trips) == 5 * 2, trips
    before_call, after_call = [t for _, t in trips[0::2]], [t for _, t in trips[1::2]]
    assert all(t == before_call[0] for t in before_call) and all(t == after_call[0] for t in after_call), trips
    assert before_call[0] == ["EVALSHA"] * 3, before_call[0]
    assert after_call[0] == ["EVALSHA"] * 4, after_call[0]


async def test_no_sql_on_the_request_path_embedded(tmp_path: Any, sims: Any) -> None:
    backend = Backend("embedded", f"sqlite:///{tmp_path / 'gateway.db'}", "", "gw")
    gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], **QUIET))
    sql = SqlCounter()
    try:
        key = await _principal_with_every_stage(gw)
        async with AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
            await _requests(client, 2, False)
            event.listen(gw.app.runtime.engine.sync_engine, "before_cursor_execute", sql)
            await _requests(client, 3, False)
            await _requests(client, 3, True)
    finally:
        _unlisten(gw, sql)
        await gw.stop()
    assert sql.statements == []
