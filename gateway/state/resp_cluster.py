"""The lean client on Redis Cluster: one ``RespClient`` per master, each command sent to its slot's owner.

``execute([(slot, command), ...])`` groups the commands by node, submits every node's batch before
awaiting any (the nodes answer in parallel: one round trip's time, not one per node), and puts the
replies back in the callers' order. The slot map comes from ``CLUSTER SLOTS`` of any reachable node
(the URL's node first, then the masters last known) and is learnt again when the cluster says it
changed:

- ``MOVED slot host:port``: the slot has a new owner (a resharding, or a replica promoted after its
  master failed). The map is corrected for that slot at once, a full refresh follows, and the
  command is sent again to the new owner. The command did not run on the node that answered MOVED.
- ``ASK slot host:port``: the slot is migrating and this key is already on the target; the command
  is sent once to the target, preceded by ``ASKING``, and the map is left as it is.
- ``TRYAGAIN``: a script's keys are split by a migration in progress, or some do not exist yet on
  the importing node (Redis runs a multi-key call on a migrating slot only once all its keys are on
  one side). Sent again after 10, 20, 40, ... ms, ~300 ms in all: a resharding moves a slot's few
  keys in milliseconds. A migration stalled longer than that fails the round trip over to local state.
- ``CLUSTERDOWN``, a node that cannot be reached, or too many redirects: the round trip fails with
  ``RespUnavailable`` (the caller falls back to local state), the map is refreshed, and the node is
  skipped for a moment (``down_s``) instead of costing every request a connection attempt. A node
  going down and coming back are each logged once.

None of these replies means the script ran, so sending it again never counts twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.state.resp import RespClient, RespError, RespTarget, RespUnavailable, encode
from gateway.state.slots import SLOTS

log = logging.getLogger("gateway.state")

Address = tuple[str, int]

_ASKING = encode(["ASKING"])
_TRYAGAIN = object()  # a result slot's mark: sent again after a pause
_CLUSTER_SLOTS = encode(["CLUSTER", "SLOTS"])
_MAX_REDIRECTS = 5
_TRYAGAIN_WAITS = (0.01, 0.02, 0.04, 0.08, 0.16)


def _redirect(error: RespError) -> tuple[str, int, Address] | None:
    """("MOVED" or "ASK", slot, address) of a redirect reply, else None."""
    text = str(error)
    if not (text.startswith("MOVED ") or text.startswith("ASK ")):
        return None
    kind, slot, where = text.split(" ", 2)
    host, _, port = where.rpartition(":")
    return kind, int(slot), (host, int(port))


class ClusterResp:
    def __init__(self, url: str | RespTarget, connect_timeout: float = 1.0, reply_timeout: float = 1.0,
                 down_s: float = 0.5) -> None:
        self._seed = url if isinstance(url, RespTarget) else RespTarget.from_url(url)
        if self._seed.db:
            raise ValueError("Redis Cluster has database 0 only")
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._down_s = down_s
        self._nodes: dict[Address, RespClient] = {}
        self._slots: list[Address | None] = [None] * SLOTS
        self._mapped = False
        self._refreshing: asyncio.Task[None] | None = None
        self._last_refresh = 0.0
        self._down: dict[Address, float] = {}  # node -> monotonic time until which it is skipped
        self.refreshes = 0  # slot maps learnt (the first one included)
        self.redirects = 0  # MOVED and ASK replies followed
        self.retries = 0  # TRYAGAIN replies waited out

    # --- the slot map ---------------------------------------------------------------------------
    def owner(self, slot: int) -> Address | None:
        return self._slots[slot]

    def masters(self) -> list[Address]:
        return sorted({a for a in self._slots if a is not None})

    def _node(self, address: Address) -> RespClient:
        client = self._nodes.get(address)
        if client is None:
            client = self._nodes[address] = RespClient(self._seed.at(*address), self._connect_timeout,
                                                       self._reply_timeout)
        return client

    async def refresh(self) -> None:
        """Learn the slot map from the first node that answers ``CLUSTER SLOTS``."""
        self._last_refresh = time.monotonic()
        seed = (self._seed.host, self._seed.port)
        candidates = [seed, *[a for a in self.masters() if a != seed]]
        candidates += [a for a in self._nodes if a not in candidates]
        failures: list[str] = []
        for address in candidates:
            if self._down.get(address, 0.0) > time.monotonic() and address != seed:
                continue
            try:
                reply = (await self._node(address).execute([_CLUSTER_SLOTS]))[0]
            except RespUnavailable as exc:
                failures.append(str(exc))
                continue
            if isinstance(reply, RespError):
                failures.append(f"{address[0]}:{address[1]}: {reply}")
                continue
            self._install(reply, address[0])
            return
        raise RespUnavailable("no Redis Cluster node answered CLUSTER SLOTS: " + "; ".join(failures))

    def _install(self, ranges: list[Any], default_host: str) -> None:
        slots: list[Address | None] = [None] * SLOTS
        for entry in ranges:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if master[0] else default_host
            address = (host, int(master[1]))
            slots[start:end + 1] = [address] * (end + 1 - start)
        before = self.masters()
        self._slots = slots
        self._mapped = True
        self.refreshes += 1
        after = self.masters()
        for address in after:
            if address not in before:
                self._down.pop(address, None)
        if before != after:
            log.info("Redis Cluster slot map: %d masters (%s)", len(after),
                     ", ".join(f"{h}:{p}" for h, p in after))

    async def _first_map(self) -> None:
        """The first slot map, learnt once for every caller waiting for it."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self.refresh())
        task = self._refreshing
        await asyncio.shield(task)
        if not self._mapped:
            task.result()

    def _refresh_soon(self) -> None:
        """A refresh in the background, at most one at a time and one per ``down_s``."""
        if self._refreshing is not None and not self._refreshing.done():
            return
        if time.monotonic() - self._last_refresh < self._down_s:
            return
        self._refreshing = asyncio.ensure_future(self._background_refresh())

    async def _background_refresh(self) -> None:
        try:
            await self.refresh()
        except RespUnavailable as exc:
            log.warning("Redis Cluster: %s", exc)

    def _node_failed(self, address: Address, exc: Exception) -> None:
        if address not in self._down:
            log.warning("Redis Cluster node %s:%d unreachable (%s); its slots are served from local state "
                        "until it answers or a replica takes over", address[0], address[1], exc)
        self._down[address] = time.monotonic() + self._down_s
        self._refresh_soon()

    def _node_answered(self, address: Address) -> None:
        if self._down.pop(address, None) is not None:
            log.info("Redis Cluster node %s:%d answers again", address[0], address[1])

    # --- commands ---------------------------------------------------------------------------------
    async def execute(self, slotted: list[tuple[int, bytes]]) -> list[Any]:
        """The replies of ``(slot, command)`` pairs, in order; error replies as values."""
        if not slotted:
            return []
        if not self._mapped:
            await self._first_map()
        slots = self._slots
        targets: list[Address | None] = [slots[slot] for slot, _ in slotted]
        first = targets[0]
        if first is not None and first not in self._down and targets.count(first) == len(targets):
            # The usual case: every call on one master, none redirected. One batch, no grouping.
            try:
                results = await (await self._node(first).submit([command for _, command in slotted]))
            except RespUnavailable as exc:
                self._node_failed(first, exc)
                raise
            again = [i for i, r in enumerate(results) if type(r) is RespError and self._redirect_or_down(r)]
            if not again:
                return results
            asking: set[int] = set()
            for i in again:  # only these did not run; the others' results stand
                reply = results[i]
                if str(reply).startswith("CLUSTERDOWN"):
                    self._refresh_soon()
                    raise RespUnavailable(f"Redis Cluster: {reply}")
                self._redirected(reply, i, targets, asking, results)
            return await self._resend(slotted, again, targets, asking, results)
        return await self._resend(slotted, list(range(len(slotted))), targets, set(), [None] * len(slotted), 0)

    @staticmethod
    def _redirect_or_down(reply: RespError) -> bool:
        return str(reply).startswith(("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN"))

    async def _resend(self, slotted: list[tuple[int, bytes]], pending: list[int], targets: list[Address | None],
                      asking: set[int], results: list[Any], redirects: int = 1) -> list[Any]:
        """Send ``pending`` (again), one batch per node in parallel, until nothing is redirected."""
        waits = 0
        if redirects and any(results[i] is _TRYAGAIN for i in pending):
            await asyncio.sleep(_TRYAGAIN_WAITS[0])
            waits, redirects = 1, 0
        while True:
            again = await self._send_once(slotted, pending, targets, asking, results)
            if not again:
                return results
            pending = again
            if any(results[i] is _TRYAGAIN for i in again):
                if waits == len(_TRYAGAIN_WAITS):
                    raise RespUnavailable("Redis Cluster: a slot is still migrating (TRYAGAIN)")
                await asyncio.sleep(_TRYAGAIN_WAITS[waits])
                waits += 1
            else:
                redirects += 1
                if redirects > _MAX_REDIRECTS:
                    raise RespUnavailable(f"Redis Cluster: still redirected after {_MAX_REDIRECTS} tries")

    async def _send_once(self, slotted: list[tuple[int, bytes]], pending: list[int], targets: list[Address | None],
                         asking: set[int], results: list[Any]) -> list[int]:
        """Send the ``pending`` commands, one batch per node in parallel; returns those to send again."""
        groups: dict[Address, list[int]] = {}
        for i in pending:
            address = targets[i]
            if address is None:
                self._refresh_soon()
                raise RespUnavailable(f"Redis Cluster: no master serves slot {slotted[i][0]}")
            groups.setdefault(address, []).append(i)
        now = time.monotonic()
        sent: list[tuple[Address, list[int], asyncio.Future[list[Any]]]] = []
        failure: RespUnavailable | None = None
        for address, indexes in groups.items():
            if self._down.get(address, 0.0) > now:
                failure = failure or RespUnavailable(f"Redis Cluster node {address[0]}:{address[1]} is down")
                continue
            commands: list[bytes] = []
            for i in indexes:
                if i in asking:
                    commands.append(_ASKING)
                commands.append(slotted[i][1])
            try:
                sent.append((address, indexes, await self._node(address).submit(commands)))
            except RespUnavailable as exc:
                self._node_failed(address, exc)
                failure = failure or exc
        again: list[int] = []
        for address, indexes, future in sent:  # every future is awaited, also after a failure
            try:
                replies = await future
            except RespUnavailable as exc:
                self._node_failed(address, exc)
                failure = failure or exc
                continue
            self._node_answered(address)
            pos = 0
            for i in indexes:
                if i in asking:
                    pos += 1  # ASKING's +OK
                    asking.discard(i)
                reply = replies[pos]
                pos += 1
                if not isinstance(reply, RespError):
                    results[i] = reply
                elif str(reply).startswith("CLUSTERDOWN"):
                    self._refresh_soon()
                    failure = failure or RespUnavailable(f"Redis Cluster: {reply}")
                elif self._redirected(reply, i, targets, asking, results):
                    again.append(i)
                else:
                    results[i] = reply
        if failure is not None:
            raise failure
        return again

    def _redirected(self, reply: RespError, i: int, targets: list[Address | None], asking: set[int],
                    results: list[Any]) -> bool:
        redirect = _redirect(reply)
        if redirect is not None:
            kind, slot, address = redirect
            self.redirects += 1
            results[i] = None
            targets[i] = address
            if kind == "MOVED":
                self._slots[slot] = address
                self._refresh_soon()
            else:
                asking.add(i)
            return True
        if str(reply).startswith("TRYAGAIN"):
            self.retries += 1
            results[i] = _TRYAGAIN
            return True
        return False

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for client in self._nodes.values():
            await client.close()
        self._nodes.clear()
