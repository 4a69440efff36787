"""``gateway demo``: the SDK example runs as printed (its install line comes first when ``openai`` is missing),
the banner says where the data lives and how to reset it, and the demo key is reused across runs."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.common import free_port
from gateway.cli.context import service_context
from gateway.cli.demo_cmd import banner, demo_key
from gateway.config import Settings

_KEY = re.compile(r"API key\s+(sk-gw-\S+)")


def _banner(**overrides: object) -> str:
    values: dict[str, object] = {"port": 8080, "workers": ["http://127.0.0.1:8101"], "admin_key": "admin-x",
                                 "key": "sk-gw-k", "data_dir": Path("/data/demo"),
                                 "database": "sqlite:////data/demo/gateway.db", "has_openai": True,
                                 "python": "python"}
    values.update(overrides)
    return banner(**values)  # type: ignore[arg-type]


def test_the_install_line_comes_first_when_openai_is_missing() -> None:
    lines = _banner(has_openai=False, python="/opt/venv/bin/python").splitlines()
    install = lines.index("  /opt/venv/bin/python -m pip install openai   # the SDK for the example below")
    assert lines[install + 1] == "  /opt/venv/bin/python - <<'PY'"
    present = _banner(has_openai=True)
    assert "pip install" not in present and "  python - <<'PY'" in present
    assert "/data/demo" in present and "gateway demo --reset" in present


async def test_the_demo_key_is_stored_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="", redis_url="")
    path = tmp_path / "demo-key"
    async with service_context(settings) as ctx:
        first = await demo_key(ctx, path)
        assert path.read_text().strip() == first and path.stat().st_mode & 0o777 == 0o600
        assert await demo_key(ctx, path) == first
        keys = await ctx.keys.list_keys()
        assert len(keys) == 1
        await ctx.keys.revoke_key(keys[0].id)  # a stored key that no longer works is replaced
        second = await demo_key(ctx, path)
        assert second != first and path.read_text().strip() == second


class _Demo:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.worker_port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "demo", "--workers", "1", "--port", str(free_port()),
             "--first-worker-port", str(self.worker_port), *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = b""

    def banner(self, timeout: float = 90.0) -> str:
        assert self.process.stdout is not None
        fd, deadline = self.process.stdout.fileno(), time.monotonic() + timeout
        while b"Press Ctrl-C" not in self.out:
            assert time.monotonic() < deadline and self.process.poll() is None, self.out
            if select.select([fd], [], [], 0.5)[0]:
                self.out += os.read(fd, 65536)
        return self.out.decode()

    def stop(self, how: signal.Signals = signal.SIGINT) -> str:
        self.process.send_signal(how)
        out, err = self.process.communicate(timeout=30)
        assert b"demo stopped" in self.out + out, (out, err)
        with pytest.raises(ConnectionRefusedError):  # the simulated worker stopped with it
            socket.create_connection(("127.0.0.1", self.worker_port), timeout=5).close()
        return err.decode()


def test_the_demo_runs_its_sdk_example_and_keeps_its_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATA_DIR"] = str(tmp_path)
    first = _Demo(env)
    try:
        text = first.banner()
        key = _KEY.search(text).group(1)  # type: ignore[union-attr]
        assert f"data         {tmp_path / 'demo'}" in text and "gateway demo --reset" in text
        example = re.search(r"^  [^\n]* - <<'PY'\n.*?^PY$", text, re.S | re.M)
        assert example is not None, text
        ran = subprocess.run(["bash", "-c", example.group(0)], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        calls = [line.split() for line in ran.stdout.strip().splitlines()]
        assert len(calls) == 2 and int(calls[0][0]) > 0 and int(calls[1][1]) > 0  # the second call hit the cache
    finally:
        first.stop()
    assert (tmp_path / "demo" / "gateway.db").exists() and not (tmp_path / "gateway.db").exists()

    again = _Demo(env)
    try:
        text = again.banner()
        assert _KEY.search(text).group(1) == key  # type: ignore[union-attr]
        # The demo serves under the same connection limits as `gateway serve`: too many header fields, 431.
        url = re.search(r"gateway\s+(http://\S+)", text).group(1)  # type: ignore[union-attr]
        request = urllib.request.Request(url + "/health", headers={f"x-h{i}": "v" for i in range(200)})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 431
    finally:
        again.stop()

    fresh = _Demo(env, "--reset")
    try:
        assert _KEY.search(fresh.banner()).group(1) != key  # type: ignore[union-attr]
    finally:
        err = fresh.stop(signal.SIGTERM)  # `kill` stops everything as Ctrl-C does
    assert f"removed the demo's data in {tmp_path / 'demo'}" in err
