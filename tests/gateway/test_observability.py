"""Prometheus metrics (single and multi-process) and the one-JSON-line-per-request log."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bench.common import free_port, wait_http
from tests.conftest import MODEL

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_count_requests_tokens_and_workers(gateway: Any, api_key: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "metrics please"}], "max_tokens": 4}
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/metrics") as resp:
            before = await resp.text()
        for stream in (False, True):
            async with http.post(gateway.url + "/v1/chat/completions", json={**body, "stream": stream},
                                 headers={"x-api-key": api_key}) as resp:
                await resp.read()
        async with http.post(gateway.url + "/v1/chat/completions", json={"model": MODEL},
                             headers={"x-api-key": api_key}) as resp:
            assert resp.status == 400
        async with http.get(gateway.url + "/metrics") as resp:
            after = await resp.text()
    ok = "gateway_requests_total"
    assert _sample(after, ok, status="200", route="chat") - _sample(before, ok, status="200", route="chat") == 2
    assert _sample(after, ok, status="400") - _sample(before, ok, status="400") == 1
    out = "gateway_tokens_total"
    assert _sample(after, out, type="output") - _sample(before, out, type="output") == 8
    assert _sample(after, "gateway_overhead_seconds_count") >= 2
    assert _sample(after, "gateway_time_to_first_token_seconds_count") >= 2
    assert _sample(after, "gateway_worker_healthy") == 2


async def test_request_log_is_one_json_line_without_secrets(gateway: Any, api_key: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    prompt = "a very private prompt about project x"
    with caplog.at_level(logging.INFO, logger="gateway.requests"):
        async with aiohttp.ClientSession() as http, http.post(
            gateway.url + "/v1/chat/completions", headers={"x-api-key": api_key, "x-end-user-id": "user-7"},
            json={"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 3},
        ) as resp:
            request_id = resp.headers["x-request-id"]
            await resp.read()
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.requests"]
    mine = [orjson.loads(line) for line in lines if request_id in line]
    assert len(mine) == 1
    rec = mine[0]
    assert rec["status"] == 200 and rec["model"] == MODEL and rec["completion_tokens"] == 3
    assert rec["end_user"] == "user-7" and rec["worker"].startswith("w-") and rec["org"].startswith("org_")
    assert api_key not in lines[-1] and prompt not in " ".join(lines)


async def test_the_request_logs_timings_start_when_the_request_arrives(gateway: Any, api_key: str,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Overhead before the upstream call, TTFT and duration count from the request's arrival, so reading the
    body, the key's check and the parse are in them: a body that takes 0.3 s to arrive shows in each."""
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "slow body"}], "max_tokens": 2})
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    with caplog.at_level(logging.INFO, logger="gateway.requests"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"x-api-key: " + api_key.encode() + b"\r\ncontent-length: " + str(len(body)).encode()
                     + b"\r\nconnection: close\r\n\r\n" + body[:10])
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(body[10:])
        answer = await reader.read()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    request_id = answer.split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    rec = next(orjson.loads(r.getMessage()) for r in caplog.records
               if r.name == "gateway.requests" and request_id in r.getMessage())
    assert rec["overhead_ms"] >= 300 and rec["ttft_ms"] >= rec["overhead_ms"]
    assert rec["duration_ms"] >= rec["ttft_ms"]


def test_metrics_add_up_across_server_processes(tmp_path: Any) -> None:
    sim_port, gw_port = free_port(), free_port()
    env = {**os.environ, "GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_WORKERS": f"http://127.0.0.1:{sim_port}",
           "GATEWAY_PORT": str(gw_port), "PROMETHEUS_MULTIPROC_DIR": ""}
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sim", "--port", str(sim_port), "--time-scale", "0"])
    key = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--org", "mp"], env=env,
                         check=True, capture_output=True, text=True).stdout.strip()
    gw = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--processes", "2"], env=env)
    try:
        wait_http(f"http://127.0.0.1:{sim_port}/health")
        wait_http(f"http://127.0.0.1:{gw_port}/ready")
        body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1})
        for _ in range(40):  # new connections: both processes take some
            req = urllib.request.Request(f"http://127.0.0.1:{gw_port}/v1/chat/completions", data=body,
                                         headers={"Authorization": f"Bearer {key}",
                                                  "Content-Type": "application/json", "Connection": "close"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
        # Each process hands its request-path tallies to its metric files at a scrape of its own and once
        # a second: a scrape sees the other process's requests within that second.
        deadline = time.monotonic() + 5
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{gw_port}/metrics", timeout=10) as resp:
                counted = _sample(resp.read().decode(), "gateway_requests_total", status="200")
            if counted == 40 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert counted == 40
    finally:
        gw.terminate()
        sim.terminate()
        gw.wait(15)
        sim.wait(15)


async def test_alerts_and_dashboard_use_only_exported_metrics(gateway: Any, api_key: str) -> None:
    import re

    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/chat/completions", headers={"x-api-key": api_key},
                             json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}) as resp:
            await resp.read()
        async with http.get(gateway.url + "/metrics") as resp:
            exported = set(re.findall(r"^# TYPE (\w+) ", await resp.text(), re.M))
    exported |= {name + suffix for name in list(exported) for suffix in ("_total", "_bucket", "_count", "_sum")}
    texts = [(DEPLOY / "prometheus" / "gateway-alerts.yml").read_text(),
             (DEPLOY / "grafana" / "gateway-dashboard.json").read_text()]
    used = {m for text in texts for m in re.findall(r"\b(gateway_[a-z_]+)", text)}
    assert used, "no gateway metric referenced"
    assert used <= exported, f"referenced but not exported: {sorted(used - exported)}"


async def test_component_counters_are_exported(gateway: Any, api_key: str) -> None:
    from tests.limits.helpers import complete, new_key, org_with_plan

    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gateway.url, "metrics-limited", rpm=1)
        limited = (await new_key(http, gateway.url, org))["key"]
        assert [(await complete(http, gateway.url, limited))[0] for _ in range(3)] == [200, 429, 429]
        body = {"model": MODEL, "messages": [{"role": "system", "content": "shared prefix " * 200},
                                             {"role": "user", "content": "x"}], "max_tokens": 2}
        for _ in range(3):
            async with http.post(gateway.url + "/v1/chat/completions", json=body,
                                 headers={"x-api-key": api_key}) as resp:
                assert resp.status == 200
        await gateway.app.runtime.billing.flush()
        for _ in range(100):  # the shared backend's stream writers run in the background
            if gateway.app.runtime.billing.ledger.records >= 4:
                break
            await asyncio.sleep(0.05)
        async with http.get(gateway.url + "/metrics") as resp:
            text = await resp.text()
    assert _sample(text, "gateway_rate_limit_rejections_total", limit="requests") >= 2
    assert _sample(text, "gateway_routing_reported_cached_tokens_total") > 0
    assert _sample(text, "gateway_routing_predicted_cached_tokens_total") > 0
    assert _sample(text, "gateway_ledger_records_total") >= 4
    assert "gateway_usage_stream_backlog" in text and "gateway_stripe_sync_runs_total" in text
