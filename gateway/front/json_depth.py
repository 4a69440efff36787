"""How deeply a parsed JSON body nests arrays and objects.

orjson parses up to 1,024 levels but encodes only 254, and the gateway re-encodes parts of bodies
(added fields, routing's canonical prompt): a body nested 255 to 1,024 deep would parse, then fail.
Bodies deeper than :data:`MAX_DEPTH` are refused at parse time instead.

The walk visits containers and their items only, never the bytes of strings, so a chat body costs
what its number of messages, parts and tool calls costs (tens of microseconds for a 160 KB agent
conversation), not what its size costs; scanning the raw bytes, even with bytes methods, costs more
than orjson's parse of them.
"""

from __future__ import annotations

from typing import Any

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
