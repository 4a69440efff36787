"""Prefix keys: stable as a conversation grows, rooted in model and tenant salt, capped, cheap."""

from __future__ import annotations

from typing import Any

from gateway.routing.prefix import HASH_BYTES, chat_bytes, completion_bytes, prefix_key

SYSTEM = {"role": "system", "content": "You are a coding agent. " * 20}
TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]


def _turns() -> list[dict[str, Any]]:
    first = {"model": "m", "tools": TOOLS, "messages": [SYSTEM, {"role": "user", "content": "fix the bug " * 30}]}
    second = {"model": "m", "tools": TOOLS, "messages": [
        *first["messages"],
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "def f():\n    return 1\n" * 40},
    ]}
    return [first, second]


def test_a_growing_conversation_keeps_its_earlier_blocks() -> None:
    first, second = _turns()
    a = prefix_key(True, first, "m", "", 64, 1024)
    b = prefix_key(True, second, "m", "", 64, 1024)
    assert a.blocks > 5 and b.blocks > a.blocks
    assert b.hashes.startswith(a.hashes)
    assert chat_bytes(second).startswith(chat_bytes(first))


def test_tool_definitions_tool_calls_and_results_are_part_of_the_key() -> None:
    first, second = _turns()
    other_tools = {**first, "tools": [{"type": "function", "function": {"name": "write_file"}}]}
    a, b = prefix_key(True, first, "m", "", 64, 1024), prefix_key(True, other_tools, "m", "", 64, 1024)
    assert a.block(0) == b.block(0)  # the system prompt comes first
    assert a.block(a.blocks - 1) != b.block(b.blocks - 1)
    data = chat_bytes(second)
    assert b"read_file" in data and b'{"path": "a.py"}' in data and b"c1" in data and b"return 1" in data


def test_salt_and_model_root_the_chain() -> None:
    first, _ = _turns()
    base = prefix_key(True, first, "m", "", 64, 1024)
    salted = prefix_key(True, first, "m", "org-a", 64, 1024)
    other_model = prefix_key(True, first, "m2", "", 64, 1024)
    assert base.blocks == salted.blocks == other_model.blocks
    for i in range(base.blocks):  # no block of one chain appears in another
        assert base.block(i) != salted.block(i) and base.block(i) != other_model.block(i)


def test_only_full_blocks_and_at_most_the_cap() -> None:
    body = {"model": "m", "prompt": "x" * 1000}
    assert prefix_key(False, body, "m", "", 64, 1024).blocks == 1000 // 64
    capped = prefix_key(False, body, "m", "", 64, 4)
    assert capped.blocks == 4 and len(capped.hashes) == 4 * HASH_BYTES and capped.total_bytes == 1000
    assert prefix_key(False, {"prompt": "short"}, "m", "", 64, 1024).blocks == 0


def test_completions_prompt_forms() -> None:
    assert completion_bytes({"prompt": ["ab", "cd"]}) == b"abcd"
    assert completion_bytes({"prompt": [1, 2, 3]}) == completion_bytes({"prompt": [[1, 2, 3], [4]]})
    assert len(completion_bytes({"prompt": [1, 2, 3]})) == 12
    assert completion_bytes({"prompt": [-1]}) == b""  # not token ids: no key, no error


def test_blocks_grow_coarse_after_the_first_ones() -> None:
    from gateway.routing.prefix import COARSE, FINE_BLOCKS, blocks_in_bytes, bytes_in_blocks

    data = {"prompt": "y" * (FINE_BLOCKS * 64 + 3 * COARSE * 64 + 10)}
    key = prefix_key(False, data, "m", "", 64, 1024)
    assert key.blocks == FINE_BLOCKS + 3
    for blocks in (0, 5, FINE_BLOCKS, FINE_BLOCKS + 7):
        assert blocks_in_bytes(bytes_in_blocks(blocks, 64), 64) == blocks
    longer = prefix_key(False, {"prompt": data["prompt"] + "z" * 5000}, "m", "", 64, 1024)
    assert longer.hashes.startswith(key.hashes)  # boundaries depend on the position only


def test_the_salt_is_spliced_into_the_forwarded_body() -> None:
    import orjson

    from gateway.front.chat import ChatCompletions
    from gateway.pipeline.exchange import Exchange
    from gateway.pipeline.principal import Principal

    for raw in (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]} \n',
                b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'):
        request = ChatCompletions().parse(raw)
        ex = Exchange("r", Principal("k", "o", "o", "s", True), request, "/v1/chat/completions", raw)
        ex.set_fields({"cache_salt": "s"})
        assert orjson.loads(ex.payload) == {**orjson.loads(raw), "cache_salt": "s"}


def test_a_conversations_opening_is_the_same_every_turn_after_the_first_answer() -> None:
    from gateway.routing.prefix import chat_canonical

    def opening_bytes(body: dict[str, object]) -> bytes | None:  # what the router keys an inferred session by
        data, n = chat_canonical(body)
        return data[:n] if n else None

    def turn(task: str, n: int) -> dict[str, object]:
        messages: list[dict[str, object]] = [{"role": "system", "content": "agent"}, {"role": "user", "content": task}]
        for i in range(n):
            messages += [{"role": "assistant", "content": f"answer {i} to {task}"},
                         {"role": "tool", "tool_call_id": f"c{i}", "content": f"result {i}"}]
        return {"messages": messages, "tools": [{"type": "function", "function": {"name": "read"}}]}

    assert opening_bytes(turn("a", 1)) == opening_bytes(turn("a", 2)) == opening_bytes(turn("a", 9))
    assert opening_bytes(turn("a", 0)) != opening_bytes(turn("a", 1))  # before the first answer
    assert opening_bytes(turn("a", 3)) != opening_bytes(turn("b", 3))
    assert opening_bytes({"messages": [{"role": "system", "content": "only"}]}) is None
    assert opening_bytes({"messages": "nope"}) is None
