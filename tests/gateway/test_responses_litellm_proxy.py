"""LiteLLM's own proxy in front of the gateway: its ``/v1/messages`` (Anthropic) bridge turns requests for
an ``openai/`` model into Responses API calls, which reach the gateway's ``/v1/responses``."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import MODEL, ServedGateway

MASTER = "sk-3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"  # the proxy's own key (it refuses to start without one)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def litellm_proxy(gateway: ServedGateway, api_key: str, tmp_path: Path) -> AsyncIterator[str]:
    config = tmp_path / "litellm.yaml"
    config.write_text(f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {gateway.url}/v1
      api_key: {api_key}
""")
    port = _free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": MASTER}
    env.pop("DATABASE_URL", None)
    litellm = Path(sys.executable).parent / "litellm"
    proc = await asyncio.create_subprocess_exec(str(litellm), "--config", str(config), "--host", "127.0.0.1",
                                                "--port", str(port), env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(1800):  # the proxy imports a lot: ~50 s on the busy development machine
                if proc.returncode is not None:
                    raise AssertionError((await proc.stderr.read()).decode()[-3000:] if proc.stderr else "exited")
                try:
                    async with http.get(url + "/health/liveliness") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the LiteLLM proxy did not start")
        yield url
    finally:
        proc.terminate()
        await proc.wait()


async def test_litellm_messages_bridge_reaches_our_responses(litellm_proxy: str, gateway: ServedGateway,
                                                             sims: object) -> None:
    body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hello through litellm"}]}
    async with aiohttp.ClientSession(headers={"anthropic-version": "2023-06-01", "x-api-key": MASTER}) as http, \
            http.post(litellm_proxy + "/v1/messages", json=body) as resp:
        status, answer = resp.status, orjson.loads(await resp.read())
    assert status == 200, answer
    # LiteLLM wraps the id of the Response it got: ours (resp_ + the gateway's request id)
    wrapped = base64.b64decode(answer["id"].removeprefix("resp_") + "===").decode()
    assert "response_id:resp_" in wrapped, wrapped
    assert answer["type"] == "message" and answer["role"] == "assistant"
    assert answer["content"][0]["type"] == "text" and answer["content"][0]["text"]
    assert answer["usage"]["output_tokens"] > 0
    seen = [b for s in sims for b in s.app.recent_requests  # type: ignore[attr-defined]
            if "hello through litellm" in orjson.dumps(b.get("messages")).decode()]
    assert seen, "the worker never saw the request"
    async with aiohttp.ClientSession(headers={"anthropic-version": "2023-06-01", "x-api-key": MASTER}) as http, \
            http.post(litellm_proxy + "/v1/messages", json={**body, "stream": True}) as resp:
        raw = await resp.read()
    assert resp.status == 200, raw[-500:]
    assert b"event: message_start" in raw and b"content_block_delta" in raw and b"event: message_stop" in raw
