"""The simulator behaves like a coding model, deterministically: tool calls on a share of "auto" turns
(parallel when allowed) with schema-valid arguments, loops that end, stop sequences, n > 1, structured
output, logprobs, and reasoning when asked."""

from __future__ import annotations

from typing import Any

import aiohttp
import jsonschema
import orjson

from tests.workersim.conftest import MakeSim, chat, post, sse_json

EDIT_SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "minLength": 3},
        "mode": {"type": "string", "enum": ["replace", "insert"]},
        "line": {"type": "integer", "minimum": 1, "maximum": 10_000},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "dry_run": {"type": "boolean"},
        "edits": {"type": "array", "minItems": 2, "items": {
            "type": "object", "properties": {"old": {"type": "string"}, "new": {"type": "string"}},
            "required": ["old", "new"], "additionalProperties": False}},
        "when": {"type": "string", "format": "date-time"},
        "owner": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/person"}]},
    },
    "required": ["path", "mode", "edits"],
    "additionalProperties": False,
    "$defs": {"person": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
}
TOOLS = [
    {"type": "function", "function": {"name": "edit_file", "parameters": EDIT_SCHEMA}},
    {"type": "function", "function": {"name": "run_tests", "parameters": {
        "type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"]}}},
]


def _chat_url(sim: Any) -> str:
    return sim.url + "/v1/chat/completions"


async def test_auto_calls_a_tool_on_a_deterministic_share_of_turns(make_sim: MakeSim,
                                                                   http: aiohttp.ClientSession) -> None:
    sim = await make_sim(tool_call_rate=0.5, parallel_tool_call_rate=0.0)
    calls = 0
    for i in range(60):
        _, body = await post(http, _chat_url(sim), chat(f"task number {i}: fix the failing test", tools=TOOLS))
        choice = body["choices"][0]
        if choice["finish_reason"] == "tool_calls":
            calls += 1
            (call,) = choice["message"]["tool_calls"]
            name = call["function"]["name"]
            schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)
            jsonschema.validate(orjson.loads(call["function"]["arguments"]), schema)
        else:
            assert choice["message"]["content"] and not choice["message"]["tool_calls"]
    assert 18 <= calls <= 42, calls  # about half
    again = [await post(http, _chat_url(sim), chat("task number 7: fix the failing test", tools=TOOLS))
             for _ in range(2)]
    assert again[0][1]["choices"] == again[1][1]["choices"]  # the same turn, the same answer
    never = await make_sim(tool_call_rate=0.0)
    _, body = await post(http, _chat_url(never), chat("task number 3", tools=TOOLS))
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_arguments_validate_against_the_schema(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    choice = {"type": "function", "function": {"name": "edit_file"}}
    for i in range(5):
        _, body = await post(http, _chat_url(sim), chat(f"edit {i}", tools=TOOLS, tool_choice=choice))
        (call,) = body["choices"][0]["message"]["tool_calls"]
        args = orjson.loads(call["function"]["arguments"])
        jsonschema.validate(args, EDIT_SCHEMA, format_checker=jsonschema.FormatChecker())
        assert len(args["edits"]) == 2 and args["owner"]["name"]


async def test_parallel_calls_when_allowed(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(tool_call_rate=1.0, parallel_tool_call_rate=1.0)
    _, body = await post(http, _chat_url(sim), chat("do both", tools=TOOLS))
    calls = body["choices"][0]["message"]["tool_calls"]
    assert len(calls) == 2 and len({c["id"] for c in calls}) == 2
    assert {c["function"]["name"] for c in calls} == {"edit_file", "run_tests"}
    status, raw = await _stream(http, _chat_url(sim), chat("do both", tools=TOOLS))
    deltas = [c["choices"][0]["delta"].get("tool_calls") for c in sse_json(raw) if c["choices"]]
    indexes = {d[0]["index"] for d in deltas if d}
    assert status == 200 and indexes == {0, 1}
    _, single = await post(http, _chat_url(sim), chat("do both", tools=TOOLS, parallel_tool_calls=False))
    assert len(single["choices"][0]["message"]["tool_calls"]) == 1


async def test_an_agent_loop_continues_with_tool_results_and_ends(make_sim: MakeSim,
                                                                  http: aiohttp.ClientSession) -> None:
    sim = await make_sim(tool_call_rate=1.0, parallel_tool_call_rate=0.0)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "make the tests pass"}]
    for rounds in range(12):
        _, body = await post(http, _chat_url(sim), {"model": "grok-code-fast-1", "messages": messages, "tools": TOOLS})
        message = body["choices"][0]["message"]
        if not message["tool_calls"]:
            assert message["content"] and rounds >= 1  # the first turn always calls at rate 1
            break
        messages.append({"role": "assistant", "content": None, "tool_calls": message["tool_calls"]})
        messages += [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in message["tool_calls"]]
    else:
        raise AssertionError("the agent loop never ended")


async def test_stop_sequences_cut_the_answer(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    _, full = await post(http, _chat_url(sim), chat("write a sentence", max_tokens=12))
    text = full["choices"][0]["message"]["content"]
    words = text.split(" ")
    stop = " " + words[5]
    _, cut = await post(http, _chat_url(sim), chat("write a sentence", max_tokens=12, stop=[stop, "zzz-never"]))
    choice = cut["choices"][0]
    assert choice["message"]["content"] == text[: text.index(stop)]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == stop
    first = next(i for i in range(1, len(words)) if words[i] == words[5])  # each word is one token
    assert cut["usage"]["completion_tokens"] == first + 1
    _, raw = await _stream(http, _chat_url(sim), chat("write a sentence", max_tokens=12, stop=stop))
    chunks = sse_json(raw)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == text[: text.index(stop)] and chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_n_choices(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    _, body = await post(http, _chat_url(sim), chat("three ways", max_tokens=5, n=3))
    texts = [c["message"]["content"] for c in body["choices"]]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2] and len(set(texts)) == 3
    assert body["usage"]["completion_tokens"] == 15
    _, raw = await _stream(http, _chat_url(sim), chat("three ways", max_tokens=5, n=3,
                                                      stream_options={"include_usage": True}))
    chunks = sse_json(raw)
    by_index: dict[int, str] = {}
    finished = set()
    for c in chunks:
        for ch in c["choices"]:
            by_index[ch["index"]] = by_index.get(ch["index"], "") + (ch["delta"].get("content") or "")
            if ch["finish_reason"]:
                finished.add(ch["index"])
    assert [by_index[i] for i in range(3)] == texts and finished == {0, 1, 2}
    assert chunks[-1]["usage"]["completion_tokens"] == 15
    status, _ = await post(http, _chat_url(sim), chat("x", n=99))
    assert status == 400


async def test_structured_output_is_valid_for_the_schema(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    fmt = {"type": "json_schema", "json_schema": {"name": "edit", "schema": EDIT_SCHEMA}}
    _, body = await post(http, _chat_url(sim), chat("plan the edit", response_format=fmt))
    jsonschema.validate(orjson.loads(body["choices"][0]["message"]["content"]), EDIT_SCHEMA)
    _, body = await post(http, _chat_url(sim), chat("json please", response_format={"type": "json_object"}))
    assert isinstance(orjson.loads(body["choices"][0]["message"]["content"]), dict)
    status, err = await post(http, _chat_url(sim), chat("x", response_format={"type": "yaml"}))
    assert status == 400 and err["error"]["param"] == "response_format"


async def test_logprobs(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    _, body = await post(http, _chat_url(sim), chat("score it", max_tokens=4, logprobs=True, top_logprobs=3))
    content = body["choices"][0]["logprobs"]["content"]
    assert "".join(e["token"] for e in content) == body["choices"][0]["message"]["content"]
    assert all(len(e["top_logprobs"]) == 3 and e["logprob"] <= 0 for e in content)
    _, raw = await _stream(http, _chat_url(sim), chat("score it", max_tokens=4, logprobs=True, top_logprobs=3))
    streamed = [e for c in sse_json(raw) if c["choices"] and c["choices"][0]["logprobs"]
                for e in c["choices"][0]["logprobs"]["content"]]
    assert streamed == content
    _, text = await post(http, sim.url + "/v1/completions",
                         {"model": "grok-code-fast-1", "prompt": "def f():", "max_tokens": 3, "logprobs": 2})
    lp = text["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 3 and all(len(t) == 2 for t in lp["top_logprobs"])
    assert "".join(lp["tokens"]) == text["choices"][0]["text"]


async def test_reasoning_when_asked(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(reasoning=False, reasoning_tokens=6)
    _, plain = await post(http, _chat_url(sim), chat("think", max_tokens=20))
    assert "reasoning_content" not in plain["choices"][0]["message"]
    _, raw = await _stream(http, _chat_url(sim), chat("think", max_tokens=20, reasoning_effort="high",
                                                      stream_options={"include_usage": True}))
    chunks = sse_json(raw)
    reasoning = [c["choices"][0]["delta"]["reasoning_content"] for c in chunks
                 if c["choices"] and "reasoning_content" in c["choices"][0]["delta"]]
    assert len(reasoning) == 12 and chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 12
    _, low = await post(http, _chat_url(sim), chat("think", max_tokens=20, reasoning_effort="low"))
    assert low["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3


async def test_a_seed_fixes_every_choice(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(tool_call_rate=0.5)
    body = chat("pick", tools=TOOLS, n=2, seed=42, max_tokens=6)

    def seen(choices: list[dict[str, Any]]) -> list[Any]:  # call ids are unique per request
        return [(c["message"]["content"], [t["function"] for t in c["message"]["tool_calls"]]) for c in choices]

    answers = [seen((await post(http, _chat_url(sim), body))[1]["choices"]) for _ in range(2)]
    other = seen((await post(http, _chat_url(sim), {**body, "seed": 43}))[1]["choices"])
    assert answers[0] == answers[1] and other != answers[0]


async def _stream(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, str]:
    async with http.post(url, json={**body, "stream": True}) as resp:
        return resp.status, (await resp.read()).decode()
