"""How deeply a parsed JSON body nests arrays and objects.

orjson parses up to 1,024 levels but encodes only 254, and the gateway re-encodes parts of bodies
(added fields, routing's canonical prompt): a body nested 255 to 1,024 deep would parse, then fail.
Bodies deeper than :data:`MAX_DEPTH` are refused at parse time instead.

The walk visits containers and their items only, never the bytes of strings, so a chat body costs
what its number of messages, parts and tool calls costs, not what its size costs; scanning the raw
bytes, even with bytes methods, costs more than orjson's parse of them. For a large body orjson's
encoder answers the same question faster (:func:`exceeds_encoded`: ~23 us instead of ~70 for a 120 KB
agent conversation): wrapped in ``254 - limit`` lists, the body encodes iff it nests at most ``limit``
deep. For a small one the ~8 us of wrapping cost more than the walk (~1 us for a 1 KB body).
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


def exceeds_encoded(body: Any, limit: int = MAX_DEPTH) -> bool:
    """``exceeds(body, limit)``, answered by orjson's encoder (its depth limit is exact)."""
    wrapped = body
    for _ in range(ORJSON_MAX_DEPTH - limit):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:  # parsed by orjson, a body fails to encode only past the depth limit
        return True
    return False


def too_deep(body: Any, size: int, limit: int = MAX_DEPTH) -> bool:
    """Whether a body of ``size`` bytes nests more than ``limit`` deep, by the cheaper of the two ways."""
    return exceeds(body, limit) if size < WALK_BELOW_BYTES else exceeds_encoded(body, limit)
