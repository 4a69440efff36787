"""Redis Cluster's key-to-slot function: CRC16 (XMODEM) of the key's hash tag, modulo 16384.

The hash tag is the part between the first ``{`` and the first ``}`` after it, when not empty; else
the whole key. Every key the gateway builds carries a tag (``keyspace.py``), so the scripts' keys of
one call always share a slot. ``SlotCache`` remembers the slot per tag: the round trip computes one
slot per script call, and tags (organisations, models, stream shards) repeat from request to request.
"""

from __future__ import annotations

SLOTS = 16384


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _table()


def crc16(data: bytes) -> int:
    crc = 0
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def hash_tag(key: bytes) -> bytes:
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def key_slot(key: str | bytes) -> int:
    data = key.encode() if isinstance(key, str) else key
    return crc16(hash_tag(data)) % SLOTS


class SlotCache:
    """``slot(key)`` with the answer kept per key (bounded: cleared when it holds ``size`` keys)."""

    __slots__ = ("_known", "_size")

    def __init__(self, size: int = 50_000) -> None:
        self._known: dict[str, int] = {}
        self._size = size

    def slot(self, key: str) -> int:
        slot = self._known.get(key)
        if slot is None:
            if len(self._known) >= self._size:
                self._known.clear()
            slot = self._known[key] = key_slot(key)
        return slot
