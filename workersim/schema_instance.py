"""A JSON value that validates against a JSON schema, made from the answer's words.

Used for tool-call arguments and for ``response_format`` answers, so that an agent under test gets what
a real model that follows the schema would give: objects with their properties (required ones always),
enums, constants, bounds, array sizes, simple string formats, and the first branch of ``anyOf`` /
``oneOf``. ``$ref`` is resolved inside the schema's own ``$defs`` / ``definitions``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_FORMATS = {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "time": "00:00:00Z",
            "email": "dev@example.com", "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000",
            "hostname": "example.com", "ipv4": "127.0.0.1"}
_MAX_DEPTH = 8


class _Words:
    def __init__(self, words: list[str]) -> None:
        self._words = [w.strip().lower() or "x" for w in words] or ["value"]
        self._next: Iterator[int] = iter(range(1 << 30))

    def take(self) -> str:
        return self._words[next(self._next) % len(self._words)]


def instance(schema: Any, words: list[str]) -> Any:
    """A value valid for ``schema``; string values are taken from ``words`` in turn."""
    root = schema if isinstance(schema, dict) else {}
    return _value(root, root, _Words(words), 0)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _value(schema: dict[str, Any], root: dict[str, Any], words: _Words, depth: int) -> Any:
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            usable = [b for b in branches if isinstance(b, dict) and b.get("type") != "null"] or branches
            return _value(usable[0] if isinstance(usable[0], dict) else {}, root, words, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in all_of:
            part = _resolve(part, root) if isinstance(part, dict) else {}
            merged.setdefault("properties", {}).update(part.get("properties") or {})
            merged["required"] = [*merged.get("required", []), *(part.get("required") or [])]
            merged.setdefault("type", part.get("type"))
        return _value(merged, root, words, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if depth >= _MAX_DEPTH and kind in ("object", "array"):
        return {} if kind == "object" else []
    if kind == "object":
        props = schema.get("properties")
        out: dict[str, Any] = {}
        if isinstance(props, dict):
            for name, sub in props.items():
                out[name] = _value(sub if isinstance(sub, dict) else {}, root, words, depth + 1)
        return out
    if kind == "array":
        items = schema.get("items")
        low = schema.get("minItems")
        count = low if isinstance(low, int) and low > 0 else 1
        high = schema.get("maxItems")
        if isinstance(high, int):
            count = min(count, high)
        return [_value(items if isinstance(items, dict) else {}, root, words, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, words)


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    value: float = 1
    if isinstance(low, int | float):
        value = max(value, low)
    if isinstance(ex_low, int | float) and value <= ex_low:
        value = ex_low + 1
    if isinstance(high, int | float):
        value = min(value, high)
    if isinstance(ex_high, int | float) and value >= ex_high:
        value = ex_high - 1 if integer else (ex_high + (low if isinstance(low, int | float) else ex_high - 1)) / 2
    return int(value) if integer else float(value)


def _string(schema: dict[str, Any], words: _Words) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    text = words.take()
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = (text * (low // max(1, len(text)) + 1))[:max(low, len(text))]
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text
