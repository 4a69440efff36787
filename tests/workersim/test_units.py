"""The simulator's parts on their own: tokenizer, prompt layout, KV cache, scheduler, config, process runner."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import orjson
import pytest

from workersim.__main__ import parse_args
from workersim.kvcache import PrefixCache
from workersim.prompt import PromptBuilder, PromptError
from workersim.run import start_sim_process
from workersim.scheduler import Engine
from workersim.sim_settings import SimConfig
from workersim.tokens import BOS, MSG_SEP, MSG_START, TOOLS_START, OutputWords, Tokenizer

ENGLISH = (
    "Prefix caching lets a server skip the prefill of tokens it has already seen, so a router that sends "
    "related requests to the same worker saves compute and answers sooner. The effect is largest for long "
    "system prompts, shared documents and agent loops that resend the whole conversation on every turn."
)


def test_tokenizer_is_deterministic_lossless_and_about_four_chars_per_token() -> None:
    tok = Tokenizer()
    assert "".join(tok.pieces(ENGLISH)) == ENGLISH
    ids = tok.encode(ENGLISH)
    assert ids == Tokenizer().encode(ENGLISH) == tok.encode(ENGLISH)  # stable across instances and caches
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert 3.5 <= len(ENGLISH) / len(ids) <= 6
    assert tok.count(ENGLISH) == len(ids)
    assert tok.encode("hello world") != tok.encode("hello  world")


def test_tokenizer_caches_stay_bounded() -> None:
    tok = Tokenizer(max_pieces=100, max_text_chars=1000)
    for i in range(500):
        tok.encode(f"text number {i} with words")
    assert len(tok._piece_ids) <= 100 and tok._text_chars <= 1000
    assert tok.encode("text number 7 with words") == Tokenizer().encode("text number 7 with words")


def test_output_words_tokenize_back_to_their_ids() -> None:
    tok = Tokenizer()
    words = OutputWords(tok)
    for seed, count in ((0, 1), (12345, 16), (2**63, 5000)):
        pieces, ids = words.answer(seed, count)
        assert len(pieces) == len(ids) == count
        assert tok.encode("".join(pieces)) == ids
    assert words.answer(7, 0) == ([], [])
    assert words.answer(7, 10) == words.answer(7, 10)
    assert words.answer(7, 10) != words.answer(8, 10)


def test_chat_template_layout() -> None:
    tok = Tokenizer()
    prompts = PromptBuilder(tok)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": 2}}}]
    system = {"role": "system", "content": "Be brief."}
    user = {"role": "user", "content": "Hi"}
    with_tools = prompts.chat({"messages": [system, user], "tools": tools})
    without = prompts.chat({"messages": [system, user]})
    assert with_tools[0] == BOS and len(with_tools) > len(without)
    # The tools come right after the system message: BOS + system is shared, then the tools, then the rest.
    generation_prompt = [MSG_START, *tok.encode("assistant"), MSG_SEP]
    shared = len(prompts.chat({"messages": [system]})) - len(generation_prompt)
    assert with_tools[:shared] == without[:shared]
    assert with_tools[shared] == TOOLS_START and without[shared] == MSG_START
    rest = len(without) - shared
    assert with_tools[-rest:] == without[-rest:]
    assert with_tools[-len(generation_prompt):] == generation_prompt
    # Tool definitions are canonical JSON: key order does not matter.
    reordered = [{"function": {"parameters": {"a": 2, "b": 1}, "name": "f"}, "type": "function"}]
    assert prompts.chat({"messages": [system, user], "tools": reordered}) == with_tools
    # Text parts equal the plain string; reasoning_content of earlier turns is dropped.
    parts = {"role": "user", "content": [{"type": "text", "text": "Hi"}]}
    assert prompts.chat({"messages": [system, parts]}) == without
    a1 = {"role": "assistant", "content": "Yes", "reasoning_content": "hmm"}
    a2 = {"role": "assistant", "content": "Yes"}
    assert prompts.chat({"messages": [user, a1, user]}) == prompts.chat({"messages": [user, a2, user]})
    bad_chats: list[dict[str, Any]] = [
        {}, {"messages": []}, {"messages": ["x"]}, {"messages": [{"role": 1}]},
        {"messages": [{"role": "user", "content": 5}]}, {"messages": [user], "tools": {"a": 1}},
    ]
    for bad in bad_chats:
        with pytest.raises(PromptError):
            prompts.chat(bad)


def test_completion_prompts() -> None:
    prompts = PromptBuilder(Tokenizer())
    assert prompts.completion({"prompt": [5, 6, 7]}) == [5, 6, 7]
    assert prompts.completion({"prompt": [[5, 6], [8]]}) == [5, 6]
    assert prompts.completion({"prompt": ["ab", "cd"]}) == prompts.completion({"prompt": "abcd"})
    bad_prompts: list[dict[str, Any]] = [
        {}, {"prompt": []}, {"prompt": [1.5]}, {"prompt": [2**40]}, {"prompt": ["a", 1]}, {"prompt": 3},
    ]
    for bad in bad_prompts:
        with pytest.raises(PromptError):
            prompts.completion(bad)


def test_block_hashes_chain_and_salt() -> None:
    cache = PrefixCache(num_blocks=100, block_size=4)
    tokens = list(range(10))
    hashes = cache.block_hashes(tokens)
    assert len(hashes) == 2  # only full blocks
    changed = cache.block_hashes([99, *tokens[1:]])
    assert changed[0] != hashes[0] and changed[1] != hashes[1]  # a change propagates down the chain
    assert cache.block_hashes(tokens, salt="s") != hashes
    assert cache.block_hashes([*tokens, 10, 11], known=hashes)[:2] == hashes
    assert PrefixCache(100, 4, namespace="other-model").block_hashes(tokens) != hashes


def test_cache_pins_running_blocks_and_counts_usage() -> None:
    cache = PrefixCache(num_blocks=6, block_size=4)
    a = cache.block_hashes(list(range(12)))
    alloc = cache.admit(a, 12, 16)
    assert alloc.cached_tokens == 0 and cache.used_blocks == 4
    cache.prefill_done(alloc)
    assert cache.cached_blocks == 3 and cache.used_blocks == 4
    # A second sequence needs more KV than is free: nothing pinned may go.
    b = cache.block_hashes(list(range(100, 112)))
    other = cache.admit(b, 12, 16)
    assert all(cache.contains(h) for h in a)
    cache.finish(other)
    cache.finish(alloc, a)
    assert cache.used_blocks == 0 and cache.usage == 0.0
    again = cache.admit(a, 12, 13)
    assert again.cached_tokens == 8
    cache.finish(again, a)
    cache.clear()
    assert cache.cached_blocks == 0 and cache.queries_total == 0


async def test_engine_admits_in_fifo_order() -> None:
    engine = Engine(SimConfig(max_running=1, time_scale=0.0))
    await engine.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await engine.acquire()
        order.append(i)
        engine.release()

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert engine.waiting == 3
    tasks[1].cancel()
    await asyncio.sleep(0)
    assert engine.waiting == 2
    engine.release()
    await asyncio.gather(tasks[0], tasks[2])
    assert order == [0, 2]
    assert engine.running == 0 and engine.waiting == 0


def test_config_validation_and_cli_args() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        SimConfig(error_rate=1.5)
    with pytest.raises(ValueError, match="max_running"):
        SimConfig(max_running=0)
    assert SimConfig(kv_capacity_tokens=1000, block_size=16).num_blocks == 62
    config, host, port = parse_args(["--port", "9001", "--time-scale", "0", "--reasoning", "true",
                                     "--worker-id", "w9"])
    assert (host, port) == ("127.0.0.1", 9001)
    assert config.time_scale == 0.0 and config.reasoning is True and config.worker_id == "w9"


async def test_sim_in_a_child_process() -> None:
    sim = await asyncio.to_thread(start_sim_process, SimConfig(worker_id="proc", time_scale=0.0))
    try:
        request = urllib.request.Request(
            sim.url + "/v1/chat/completions",
            data=orjson.dumps({"model": "grok-code-fast-1", "messages": [{"role": "user", "content": "hi"}]}),
            headers={"content-type": "application/json"},
        )
        body = await asyncio.to_thread(lambda: orjson.loads(urllib.request.urlopen(request, timeout=5).read()))
        assert body["system_fingerprint"] == "proc"
    finally:
        sim.stop()
    assert not sim.process.is_alive()
