"""/metrics labels come only from known sets (never a client's string), and /metrics can be protected:
a bearer token and/or a listener of its own."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bench.common import free_port, wait_http
from tests.conftest import MODEL, Backend, gateway_settings, serve_gateway
from tests.gateway.test_observability import _sample
from workersim.run import RunningSim


async def test_client_model_names_never_become_labels(gateway: Any, api_key: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/metrics") as resp:
            before = await resp.text()
        with caplog.at_level(logging.INFO, logger="gateway.requests"):
            for _ in range(5):
                # Longer than a model name may be: refused at parse time (400). The longest allowed: unknown (404).
                for name, status in (("m-" + secrets.token_hex(4) + "x" * 200_000, 400),
                                     ("m-" + secrets.token_hex(4) + "x" * 190, 404)):
                    async with http.post(gateway.url + "/v1/chat/completions", headers={"x-api-key": api_key},
                                         json={"model": name, "messages": [{"role": "user", "content": "x"}]}) as resp:
                        assert resp.status == status
        async with http.post(gateway.url + "/v1/chat/completions", headers={"x-api-key": api_key},
                             json={"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                   "max_tokens": 1}) as resp:
            assert resp.status == 200
        async with http.get(gateway.url + "/metrics") as resp:
            after = await resp.text()
    assert len(after) - len(before) < 20_000  # was 5 x 200 KB per labelled series
    assert "xxxxxxxxxx" not in after
    requests = "gateway_requests_total"
    assert _sample(after, requests, model="other", status="404") - _sample(before, requests, model="other",
                                                                           status="404") == 5
    assert _sample(after, requests, model=MODEL, status="200") >= 1  # served models keep their names
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.requests"]
    assert len(lines) == 10 and all(len(line) < 2_000 for line in lines)


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def _aget(http: aiohttp.ClientSession, url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_metrics_token_guards_the_main_port(tmp_path: Path, sims: list[RunningSim]) -> None:
    backend = Backend("embedded", f"sqlite:///{tmp_path / 'gateway.db'}", "", "gw")
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims], metrics_token="s3cret"))
    try:
        async with aiohttp.ClientSession() as http:
            status, text = await _aget(http, served.url + "/metrics")
            assert status == 401 and orjson.loads(text)["error"]["code"] == "missing_api_key"
            status, text = await _aget(http, served.url + "/metrics", "wrong")
            assert status == 401 and orjson.loads(text)["error"]["code"] == "invalid_api_key"
            status, text = await _aget(http, served.url + "/metrics", "s3cret")
            assert status == 200 and sims[0].url in text  # worker URLs, behind the token
    finally:
        await served.stop()


async def test_metrics_listener_of_its_own(tmp_path: Path, sims: list[RunningSim]) -> None:
    backend = Backend("embedded", f"sqlite:///{tmp_path / 'gateway.db'}", "", "gw")
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims], metrics_address="127.0.0.1:0",
                                                  metrics_token="s3cret"))
    try:
        listener = served.app.metrics_url
        assert listener is not None and listener != served.url
        async with aiohttp.ClientSession() as http:
            assert (await _aget(http, served.url + "/metrics", "s3cret"))[0] == 404  # not on the main port
            assert (await _aget(http, listener + "/metrics"))[0] == 401
            status, text = await _aget(http, listener + "/metrics", "s3cret")
            assert status == 200 and "gateway_worker_healthy" in text and sims[0].url in text
            assert (await _aget(http, listener + "/admin/orgs", "s3cret"))[0] == 404  # nothing else there
            assert (await _aget(http, served.url + "/health"))[0] == 200
    finally:
        await served.stop()


def test_gateway_serve_guards_connections_and_serves_metrics_apart(tmp_path: Path) -> None:
    """The real ``gateway serve`` path, two processes: both share the metrics listener; a slow client
    is cut after the head timeout."""
    import socket
    import time

    sim_port, gw_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, "GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_WORKERS": f"http://127.0.0.1:{sim_port}",
           "GATEWAY_PORT": str(gw_port), "GATEWAY_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
           "GATEWAY_CLIENT_HEADER_TIMEOUT_S": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade"], env=env, check=True, capture_output=True)
    sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sim", "--port", str(sim_port), "--time-scale", "0"])
    gw = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--processes", "2"], env=env)
    try:
        wait_http(f"http://127.0.0.1:{sim_port}/health")
        wait_http(f"http://127.0.0.1:{gw_port}/ready")
        wait_http(f"http://127.0.0.1:{metrics_port}/metrics")
        for _ in range(10):  # new connections: both processes answer on the shared metrics port
            status, body = _get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert status == 200 and b"gateway_worker_healthy" in body
        assert _get(f"http://127.0.0.1:{gw_port}/metrics")[0] == 404
        with socket.create_connection(("127.0.0.1", gw_port), timeout=5) as slow:
            slow.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            started = time.monotonic()
            answer = slow.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert time.monotonic() - started < 3
        assert _get(f"http://127.0.0.1:{gw_port}/health")[0] == 200
    finally:
        gw.terminate()
        sim.terminate()
        gw.wait(15)
        sim.wait(15)
