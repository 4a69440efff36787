"""``https://`` workers: verified against GATEWAY_UPSTREAM_CA_BUNDLE when set (a private CA), and refused
(unhealthy, never used) when their certificate does not verify."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from gateway.config import ConfigError, load_settings
from tests.conftest import MODEL, Backend, gateway_settings, serve_gateway, served
from workersim.sim_app import create_sim_app
from workersim.sim_settings import SimConfig


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
async def tls_worker(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    cert, key = _certificate(tmp_path)
    app = create_sim_app(SimConfig(worker_id="tls", time_scale=0.0, api_key="tls-key"))
    async with served(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        yield url.replace("http://", "https://"), cert


async def test_an_https_worker_verified_by_the_ca_bundle(backend: Backend, tls_worker: tuple[str, Path]) -> None:
    url, cert = tls_worker
    gw = await serve_gateway(gateway_settings(backend, [{"url": url, "api_key": "tls-key"}],
                                              upstream_ca_bundle=str(cert)))
    try:
        assert [(w.url, w.state) for w in gw.app.runtime.pool.all()] == [(url, "healthy")]
        rt = gw.app.runtime
        org = await rt.keys.get_or_create_org("tls-org")
        key = (await rt.keys.create_key(org.id, "k")).key
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
            reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                         max_tokens=2)
        assert reply.model == MODEL
    finally:
        await gw.stop()


async def test_an_unverified_certificate_is_not_used(backend: Backend, tls_worker: tuple[str, Path]) -> None:
    url, _ = tls_worker
    gw = await serve_gateway(gateway_settings(backend, [{"url": url, "api_key": "tls-key"}]))
    try:
        (worker,) = gw.app.runtime.pool.all()
        assert worker.state == "down" and "health check error" in (worker.last_error or "")
    finally:
        await gw.stop()


def test_a_bundle_that_cannot_be_read_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_UPSTREAM_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"^GATEWAY_UPSTREAM_CA_BUNDLE: upstream_ca_bundle: .*cannot be loaded"):
        load_settings()
