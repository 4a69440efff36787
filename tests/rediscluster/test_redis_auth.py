"""Password, ACL user and TLS on the URL, for the lean client and redis-py alike: an ACL user on a private
redis-server (the default user switched off), TLS (``rediss://``) with a self-signed CA, and a Redis
Cluster that requires a password."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.metering.usage_stage import USAGE_APPEND
from gateway.state.keyspace import KeySpace
from gateway.state.redis import RedisState
from gateway.state.redis_clients import is_cluster, lean_client, redacted, redis_client
from gateway.state.resp import RespClient, RespUnavailable, encode
from gateway.state.resp_cluster import ClusterResp
from tests.private_cluster import cluster_port, private_cluster


@contextlib.asynccontextmanager
async def locked_redis() -> AsyncIterator[tuple[int, int, Path]]:
    """A redis-server with only the ACL user ``alice`` (password ``wonder``), on a plain and a TLS port;
    yields (plain port, TLS port, CA file)."""
    root = Path(tempfile.mkdtemp(prefix="gw-redis-acl-"))
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(  # noqa: ASYNC221 - once per test, a few ms
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    taken: set[int] = set()
    port, tls_port = cluster_port(taken), cluster_port(taken)
    binary = shutil.which("redis-server")
    assert binary
    proc = subprocess.Popen(  # noqa: ASYNC220 - starts in milliseconds
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(root),
         "--user", "default", "off", "--user", "alice", "on", ">wonder", "~*", "&*", "+@all",
         "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = RespClient(f"redis://alice:wonder@127.0.0.1:{port}/0")
        for _ in range(200):
            with contextlib.suppress(RespUnavailable):
                if await probe.execute([encode(["PING"])]) == [b"PONG"]:
                    break
            await asyncio.sleep(0.02)
        await probe.close()
        yield port, tls_port, cert
    finally:
        proc.kill()
        proc.wait(5)
        shutil.rmtree(root, ignore_errors=True)


async def _round_trip(url: str) -> None:
    """The lifespan's clients for ``url``: a script through the lean client, a read through redis-py."""
    cluster = await is_cluster(url, "auto", 1.0)
    state = RedisState(redis_client(url, cluster, 1.0), lean_client(url, cluster, 1.0))
    try:
        stream = KeySpace("gwtest-auth").usage_stream()
        await state.run(USAGE_APPEND, [stream], [b"rec"])
        assert await state.client.xlen(stream) >= 1
        assert await state.ping()
    finally:
        await state.close()


async def test_an_acl_user_and_tls() -> None:
    async with locked_redis() as (port, tls_port, ca):
        await _round_trip(f"redis://alice:wonder@127.0.0.1:{port}/0")
        await _round_trip(f"rediss://alice:wonder@127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}")
        with pytest.raises(RespUnavailable, match="WRONGPASS"):
            await RespClient(f"redis://alice:nope@127.0.0.1:{port}/0").execute([encode(["PING"])])
        with pytest.raises(RespUnavailable, match=r"NOAUTH|WRONGPASS|refused"):  # the default user is off
            await RespClient(f"redis://:x@127.0.0.1:{port}/0").execute([encode(["PING"])])
        untrusted = RespClient(f"rediss://alice:wonder@127.0.0.1:{tls_port}/0")  # no CA given: not trusted
        with pytest.raises(RespUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await untrusted.execute([encode(["PING"])])


async def test_a_cluster_with_a_password() -> None:
    async with private_cluster(password="clusterpw") as cluster:
        assert await is_cluster(cluster.url, "auto", 1.0)
        assert isinstance(lean_client(cluster.url, True, 1.0), ClusterResp)
        await _round_trip(cluster.url)
        wrong = ClusterResp(cluster.url.replace("clusterpw", "wrong"))
        with pytest.raises(RespUnavailable):
            await wrong.execute([(0, encode(["PING"]))])
        await wrong.close()


def test_the_log_never_shows_the_password() -> None:
    assert redacted("redis://alice:wonder@h:1/0") == "redis://alice:***@h:1/0"
    assert redacted("rediss://:pw@h:1") == "rediss://***@h:1"
    assert redacted("redis://h:1") == "redis://h:1"
