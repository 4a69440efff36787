"""How deeply a parsed JSON body nests arrays and objects.

orjson parses up to 1,024 levels but encodes only 254, and the gateway re-encodes parts of bodies
(added fields, routing's canonical prompt): a body nested 255 to 1,024 deep would parse, then fail.
Bodies deeper than :data:`MAX_DEPTH` are refused at parse time instead.

The walk visits containers and their items only, never the bytes of strings, so a chat body costs
what its number of messages, parts and tool calls costs, not what its size costs; scanning the raw
bytes, even with bytes methods, costs more than orjson's parse of them. For a large body orjson's
encoder answers the same question faster (:func:`exceeds_encoded`: ~23 us instead of ~70 for a 120 KB
agent conversation): wrapped in ``254 - limit`` arrays, the body encodes iff it nests at most ``limit``
deep. For a small one the few us of wrapping cost more than the walk (~1 us for a 1 KB body). A chat
body takes neither: ``chat_scan`` follows its known shape and walks only what it does not know.
"""

from __future__ import annotations

from typing import Any

import orjson

# Deeper than any real request (tools' JSON schemas nest a few dozen levels at most), well below
# orjson's encoder limit of 254.
MAX_DEPTH = 128


def exceeds(body: Any, limit: int = MAX_DEPTH) -> bool:
    """True if the parsed JSON value ``body`` nests arrays and objects more than ``limit`` deep
    (a top-level object is depth 1)."""
    if type(body) is not dict and type(body) is not list:
        return False
    stack: list[tuple[Any, int]] = [(body, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        value, depth = pop()
        if depth > limit:
            return True
        for item in value.values() if type(value) is dict else value:
            kind = type(item)
            if kind is dict or kind is list:
                push((item, depth + 1))
    return False


ORJSON_MAX_DEPTH = 254  # the deepest value orjson.dumps encodes ("Recursion limit reached" beyond)
WALK_BELOW_BYTES = 16 * 1024  # bodies smaller than this are walked; larger ones are encoded


class _Hole:
    """Where a wrapper holds the value being encoded (orjson hands it to ``default``)."""

    __slots__ = ()


_HOLE = _Hole()


def _wrapper(levels: int) -> Any:
    """``levels`` nested one-item tuples (immutable, so built once) around the hole."""
    wrapped: Any = _HOLE
    for _ in range(levels):
        wrapped = (wrapped,)
    return wrapped


_BODY_LEVELS = ORJSON_MAX_DEPTH - MAX_DEPTH
_BODY_WRAPPER = _wrapper(_BODY_LEVELS)  # a body may nest MAX_DEPTH deep
_FIELD_WRAPPER = _wrapper(_BODY_LEVELS + 1)  # a top-level field's value, MAX_DEPTH - 1


def _wrapped(value: Any, levels: int, option: int | None) -> bytes | None:
    """``value`` encoded inside ``levels`` arrays, or None past orjson's depth limit."""
    if levels == _BODY_LEVELS:
        wrapper = _BODY_WRAPPER
    elif levels == _BODY_LEVELS + 1:
        wrapper = _FIELD_WRAPPER
    else:
        wrapper = _wrapper(levels)

    def fill(obj: Any) -> Any:
        if obj is _HOLE:
            return value
        raise TypeError  # never for a parsed value

    try:
        return orjson.dumps(wrapper, default=fill, option=option)
    except orjson.JSONEncodeError:  # parsed by orjson, a value fails to encode only past the depth limit
        return None


def encoded_within(value: Any, limit: int, option: int | None = None) -> bytes | None:
    """orjson's encoding of ``value`` (with ``option``), or None if it nests more than ``limit`` deep.

    The value is encoded inside ``254 - limit`` arrays, so it encodes iff it nests at most ``limit``
    deep: orjson's depth limit is exact, and a value it parsed fails to encode for no other reason.
    The arrays are nested tuples built once for the two limits the request path uses, with the value
    handed in by orjson's ``default`` hook, where wrapping it in lists per call cost ~4 us."""
    levels = ORJSON_MAX_DEPTH - limit
    encoded = _wrapped(value, levels, option)
    return None if encoded is None else encoded[levels:len(encoded) - levels]


def exceeds_encoded(body: Any, limit: int = MAX_DEPTH) -> bool:
    """``exceeds(body, limit)``, answered by orjson's encoder (its depth limit is exact)."""
    return _wrapped(body, ORJSON_MAX_DEPTH - limit, None) is None


def too_deep(body: Any, size: int, limit: int = MAX_DEPTH) -> bool:
    """Whether a body of ``size`` bytes nests more than ``limit`` deep, by the cheaper of the two ways."""
    return exceeds(body, limit) if size < WALK_BELOW_BYTES else exceeds_encoded(body, limit)
