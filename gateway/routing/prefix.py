"""Prefix keys: a request as canonical bytes, cut into fixed-size blocks with chained hashes.

The canonical bytes grow only at the end as a conversation grows, so every turn's blocks start with
the previous turn's blocks. Chat: the leading system/developer message, then the tool definitions
(JSON, sorted keys), then every other message in order (role, tool_call_id, the text of the content,
each tool call's name and arguments), each framed by control bytes that JSON text cannot contain
unescaped. Completions: the prompt (text, or token ids as packed integers).

Block ``i``'s hash is ``xxh3_64(block_i, seed=hash_{i-1})``; the chain's root is the hash of the model
and the tenant's cache salt, so two tenants (or two models) never share a block hash. Hashes are
returned packed (8 bytes each, native order), which is what the index scripts take as one argument.
At most ``max_blocks`` leading blocks are hashed; only full blocks count (like vLLM's prefix cache).

Block sizes depend only on the position, so boundaries stay put as a conversation grows: the first
``FINE_BLOCKS`` blocks are ``block_bytes`` long, later ones ``COARSE`` times that. A 100K-token prompt
is ~240 blocks instead of ~1,000 (hashing, the lookup and the index update all scale with the count),
while the precision stays under 2% of the prompt where blocks are coarse.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from struct import iter_unpack
from typing import Any

import orjson
from xxhash import xxh3_64_intdigest

HASH_BYTES = 8
FINE_BLOCKS = 128
COARSE = 8
SYSTEM_ROLES = ("system", "developer")
# Framing bytes (ASCII separators). Text may contain them too: the framing only has to keep the bytes
# stable and distinct enough for routing; tenants are kept apart by the salt at the root, not by framing.
MESSAGE_MARK = "\x1e"
SEPARATOR = "\x1f"
CALL_MARK = "\x1d"
TOOLS_MARK = "\x1c"


@dataclass(frozen=True, slots=True)
class PrefixKey:
    """A request's block hashes and the size of the canonical text they were cut from."""

    hashes: bytes  # packed, HASH_BYTES per block
    total_bytes: int  # length of the canonical bytes (all of it, also past the block cap)
    block_bytes: int

    @property
    def blocks(self) -> int:
        return len(self.hashes) // HASH_BYTES

    def block(self, i: int) -> bytes:
        return self.hashes[i * HASH_BYTES:(i + 1) * HASH_BYTES]


def _text(content: Any, parts: list[str]) -> None:
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                parts.append(orjson.dumps(part, option=orjson.OPT_SORT_KEYS).decode())


def _message(message: Any, parts: list[str]) -> None:
    if not isinstance(message, dict):
        return
    role = message.get("role")
    parts.append(MESSAGE_MARK)
    parts.append(role if isinstance(role, str) else "")
    parts.append(SEPARATOR)
    call_id = message.get("tool_call_id")
    if isinstance(call_id, str):
        parts.append(call_id)
        parts.append(SEPARATOR)
    _text(message.get("content"), parts)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            name = function.get("name")
            args = function.get("arguments")
            parts.append(CALL_MARK)
            parts.append(name if isinstance(name, str) else "")
            parts.append(SEPARATOR)
            parts.append(args if isinstance(args, str) else orjson.dumps(args, option=orjson.OPT_SORT_KEYS).decode())


def chat_bytes(body: dict[str, Any]) -> bytes:
    """Canonical bytes of a chat request (``messages`` already checked to be a non-empty list)."""
    return chat_canonical(body)[0]


def chat_canonical(body: Mapping[str, Any]) -> tuple[bytes, int]:
    """The canonical bytes and the length of the conversation's opening in them: through the first
    assistant message (before the first answer: through the first message after the system one);
    0 when there is no message past the system one. Every later turn starts with the same opening."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return b"", 0
    parts: list[str] = []
    start = 0
    if messages and isinstance(messages[0], dict) and messages[0].get("role") in SYSTEM_ROLES:
        _message(messages[0], parts)
        start = 1
    tools = body.get("tools")
    if tools:
        parts.append(TOOLS_MARK)
        parts.append(orjson.dumps(tools, option=orjson.OPT_SORT_KEYS).decode())
    end = -1  # index of the opening's last message
    if start < len(messages):
        end = start
        for i in range(start + 1, len(messages)):
            m = messages[i]
            if isinstance(m, dict) and m.get("role") == "assistant":
                end = i
                break
    opening_parts = 0
    for i in range(start, len(messages)):
        _message(messages[i], parts)
        if i == end:
            opening_parts = len(parts)
    if not opening_parts:
        return "".join(parts).encode("utf-8", "surrogatepass"), 0
    head = "".join(parts[:opening_parts]).encode("utf-8", "surrogatepass")
    return head + "".join(parts[opening_parts:]).encode("utf-8", "surrogatepass"), len(head)


def completion_bytes(body: Mapping[str, Any]) -> bytes:
    """Canonical bytes of a completions request: the text, or the first token-id list packed."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt.encode("utf-8", "surrogatepass")
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, str):
            return "".join(p for p in prompt if isinstance(p, str)).encode("utf-8", "surrogatepass")
        ids = first if isinstance(first, list) else prompt
        try:
            return array("I", ids).tobytes()
        except (TypeError, OverflowError):
            return b""
    return b""


def root_hash(model: str, salt: str) -> int:
    return xxh3_64_intdigest(f"{model}\x00{salt}".encode("utf-8", "surrogatepass"))


def bytes_in_blocks(blocks: int, block_bytes: int) -> int:
    """How many canonical bytes the first ``blocks`` blocks cover."""
    fine = min(blocks, FINE_BLOCKS)
    return fine * block_bytes + (blocks - fine) * block_bytes * COARSE


def blocks_in_bytes(nbytes: int, block_bytes: int) -> int:
    """How many full blocks the first ``nbytes`` canonical bytes hold."""
    fine_span = FINE_BLOCKS * block_bytes
    if nbytes <= fine_span:
        return nbytes // block_bytes
    return FINE_BLOCKS + (nbytes - fine_span) // (block_bytes * COARSE)


def block_hashes(data: bytes, root: int, block_bytes: int, max_blocks: int, first: int = 0) -> bytes:
    """Packed chained hashes of the leading full blocks of ``data`` (at most ``max_blocks``); from block
    ``first`` on, ``root`` being then the hash of block ``first - 1`` (``chains.py`` has the earlier ones).

    The blocks are cut by ``struct.iter_unpack`` (in C; slicing a memoryview per block cost ~15% more)."""
    n = min(blocks_in_bytes(len(data), block_bytes), max_blocks)
    out = array("Q")
    add = out.append
    h = root
    view = memoryview(data)
    fine = min(n, FINE_BLOCKS)
    if first < fine:
        for (block,) in iter_unpack(f"{block_bytes}s", view[first * block_bytes:fine * block_bytes]):
            h = xxh3_64_intdigest(block, h)
            add(h)
    if n > fine:
        size = block_bytes * COARSE
        skip = max(first - fine, 0)
        start = bytes_in_blocks(fine + skip, block_bytes)
        for (block,) in iter_unpack(f"{size}s", view[start:start + (n - fine - skip) * size]):
            h = xxh3_64_intdigest(block, h)
            add(h)
    if out.itemsize != HASH_BYTES:  # pragma: no cover - array "Q" is 8 bytes on every platform we run
        raise RuntimeError("unexpected array item size")
    return out.tobytes()


def prefix_key(kind_chat: bool, body: dict[str, Any], model: str, salt: str, block_bytes: int,
               max_blocks: int) -> PrefixKey:
    data = chat_bytes(body) if kind_chat else completion_bytes(body)
    return PrefixKey(block_hashes(data, root_hash(model, salt), block_bytes, max_blocks), len(data), block_bytes)
