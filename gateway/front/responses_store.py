"""Stored responses: what ``store`` keeps and ``previous_response_id`` continues (see docs/responses.md).

Where: the shared state store. On Redis (every replica sees every response) each response is one
hash under its organisation's hash tag, ``{resp:ORG}``, expiring ``GATEWAY_RESPONSES_RETENTION_S``
after it was written; embedded, the in-process twin keeps them, at most
``GATEWAY_RESPONSES_LOCAL_MAX_BYTES``, the least recently used dropped first.

A record holds the previous response's id, this request's input items, the output items and the
``Response`` object. Reading a conversation is ONE round trip whatever its length: a script follows
the ``prev`` links server-side (``response_chain``). Writing is no extra round trip: the Responses stage
(``responses.py``) queues the record in the request's settling round trip, which runs before the last byte of the answer
goes out; so a client holding a complete response can always chain from it, on any replica. When Redis
does not answer then, the settling runs on the replica's local state and is replayed on Redis when it
answers again (``Forwarder.settle_later``): meanwhile the conversation continues on that replica only.

An organisation's responses are keyed by its id, so another organisation's id is simply not found.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import errors
from gateway.state.base import MemoryData, RoundTrip, Script, StateStore, StoreUnavailable
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState

log = logging.getLogger("gateway.responses")


# --- the in-process twins: every response in one holder, bounded in bytes ---------------------------
def _records(data: MemoryData, holder: str) -> dict[str, Any]:
    box = data.value(holder)
    if "lru" not in box:
        box["lru"] = OrderedDict()
        box["bytes"] = 0
    return box


def _lookup(box: dict[str, Any], key: str, now_ms: int) -> dict[str, bytes] | None:
    lru: OrderedDict[str, tuple[int, dict[str, bytes], int]] = box["lru"]
    found = lru.get(key)
    if found is None:
        return None
    if found[0] <= now_ms:
        del lru[key]
        box["bytes"] -= found[2]
        return None
    lru.move_to_end(key)
    return found[1]


def _put_py(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> Any:
    box = _records(data, str(args[5]))
    lru: OrderedDict[str, tuple[int, dict[str, bytes], int]] = box["lru"]
    fields = {"prev": _b(args[0]), "input": _b(args[1]), "output": _b(args[2]), "response": _b(args[3])}
    size = sum(len(v) for v in fields.values()) + len(keys[0])
    old = lru.pop(keys[0], None)
    if old is not None:
        box["bytes"] -= old[2]
    lru[keys[0]] = (now_ms + int(args[4]), fields, size)
    box["bytes"] += size
    limit = int(args[6])
    while box["bytes"] > limit and lru:
        _, (_, _, dropped) = lru.popitem(last=False)
        box["bytes"] -= dropped
    return 1


def _chain_py(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> Any:
    box = _records(data, str(args[2]))
    out: list[Any] = [b"ok"]
    key, rid = keys[0], b""
    for _ in range(int(args[1])):
        fields = _lookup(box, key, now_ms)
        if fields is None:
            return [b"missing", rid]
        out += [fields["input"], fields["output"]]
        if not fields["prev"]:
            return out
        rid = fields["prev"]
        key = str(args[0]) + rid.decode()
    return [b"deep"]


def _get_py(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> Any:
    fields = _lookup(_records(data, str(args[0])), keys[0], now_ms)
    return [] if fields is None else [fields["response"], fields["input"]]


def _delete_py(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> Any:
    box = _records(data, str(args[0]))
    found = box["lru"].pop(keys[0], None)
    if found is None:
        return 0
    box["bytes"] -= found[2]
    return 1 if found[0] > now_ms else 0


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


PUT = Script.load("response_put", _put_py)
CHAIN = Script.load("response_chain", _chain_py)
GET = Script.load("response_get", _get_py)
DELETE = Script.load("response_delete", _delete_py)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What one request leaves for later requests and for GET."""

    response_id: str
    previous_id: str | None
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]
    response: dict[str, Any]


class ResponseStore:
    def __init__(self, state: StateStore, local: MemoryState, keys: KeySpace, retention_s: float,
                 local_max_bytes: int, max_chain: int) -> None:
        self._state = state
        self._local = local
        self._keys = keys
        self._retention_ms = max(1, int(retention_s * 1000))
        self._local_max = local_max_bytes
        self._max_chain = max_chain

    async def _run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._state.run(script, keys, args)
        except StoreUnavailable as exc:  # what this replica kept while Redis was away, if anything
            log.warning("shared state unreachable for stored responses, using local state: %s", exc)
            return await self._local.run(script, keys, args)

    async def history(self, org_id: str, response_id: str) -> list[dict[str, Any]]:
        """The items of the conversation ending with ``response_id``, oldest first: each response's
        input, then its output. 400 (``previous_response_id``) if it or a link is not found."""
        reply = await self._run(CHAIN, [self._keys.response(org_id, response_id)],
                                [self._keys.response_base(org_id), self._max_chain, self._keys.responses_local()])
        status = reply[0]
        if status == b"missing":
            missing = reply[1].decode() if reply[1] else response_id
            raise errors.invalid_request(f"Previous response with id '{missing}' not found.",
                                         param="previous_response_id", code="previous_response_not_found")
        if status == b"deep":
            raise errors.invalid_request(f"The conversation of '{response_id}' is longer than "
                                         f"{self._max_chain} responses.", param="previous_response_id",
                                         code="invalid_value")
        items: list[dict[str, Any]] = []
        for i in range(len(reply) - 2, 0, -2):  # oldest first
            items += orjson.loads(reply[i])
            items += orjson.loads(reply[i + 1])
        return items

    def put(self, trip: RoundTrip, org_id: str, record: StoredResponse) -> None:
        trip.call(PUT, [self._keys.response(org_id, record.response_id)], [
            record.previous_id or "", orjson.dumps(record.input), orjson.dumps(record.output),
            orjson.dumps(record.response), self._retention_ms, self._keys.responses_local(), self._local_max])

    async def get(self, org_id: str, response_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The stored ``Response`` and its input items; 404 when this organisation has none of that id."""
        reply = await self._run(GET, [self._keys.response(org_id, response_id)], [self._keys.responses_local()])
        if not reply:
            raise not_found(response_id)
        return orjson.loads(reply[0]), orjson.loads(reply[1])

    async def delete(self, org_id: str, response_id: str) -> None:
        key = self._keys.response(org_id, response_id)
        deleted = await self._run(DELETE, [key], [self._keys.responses_local()])
        if self._state.shared:  # also what this replica kept while Redis was away
            deleted = max(int(deleted), int(await self._local.run(DELETE, [key], [self._keys.responses_local()])))
        if not deleted:
            raise not_found(response_id)


def not_found(response_id: str) -> errors.GatewayError:
    return errors.GatewayError(404, f"Response with id '{response_id}' not found.", "invalid_request_error",
                               code="not_found", param="response_id")
