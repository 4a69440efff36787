"""The official openai Node SDK, unchanged: one streaming Responses call through the gateway.

The SDK is installed with npm into ``.node-sdk/`` (git-ignored) the first time."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import orjson

from tests.conftest import MODEL, ServedGateway

ROOT = Path(__file__).resolve().parents[2]
SDK_DIR = ROOT / ".node-sdk"
SCRIPT = Path(__file__).parent / "node" / "responses_stream.mjs"


async def _run(*cmd: str, cwd: Path, env: dict[str, str] | None = None) -> bytes:
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out


async def _sdk() -> Path:
    if not (SDK_DIR / "node_modules" / "openai").is_dir():
        SDK_DIR.mkdir(exist_ok=True)
        await _run("npm", "install", "--no-audit", "--no-fund", "--silent", "openai@7", cwd=SDK_DIR)
    shutil.copy(SCRIPT, SDK_DIR / SCRIPT.name)  # ESM resolves "openai" from the script's folder
    return SDK_DIR / SCRIPT.name


async def test_a_streaming_responses_call_with_the_node_sdk(gateway: ServedGateway, api_key: str) -> None:
    script = await _sdk()
    env = {**os.environ, "GATEWAY_URL": gateway.url + "/v1", "GATEWAY_KEY": api_key, "MODEL": MODEL}
    seen = orjson.loads(await _run("node", str(script), cwd=SDK_DIR, env=env))
    assert seen["types"][:2] == ["response.created", "response.in_progress"]
    assert seen["types"][-1] == "response.completed" and "response.output_text.delta" in seen["types"]
    final = seen["final"]
    assert final["status"] == "completed" and final["output"][-1]["content"][0]["text"] == seen["text"] != ""
    assert final["usage"]["output_tokens"] > 0 and final["usage"]["cost_in_usd_ticks"] > 0
