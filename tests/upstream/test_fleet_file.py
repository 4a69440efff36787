"""The fleet in the config file: workers as URLs or {url, api_key, headers, models}, the model catalog,
``os.environ/NAME`` values, and a bad file refused at start on one line naming the file, the path in it and
the reason. GATEWAY_WORKERS plain URLs keep working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, Settings, load_settings
from gateway.upstream.fleet_config import ModelSpec, ProviderSpec


def _write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text(text)
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    return cfg


FLEET = """
workers:
  - http://10.0.0.4:8000/
  - url: https://10.0.0.5:8000
    api_key: os.environ/FLEET_VLLM_KEY
    headers: {X-Pool: a}
    models: [grok-code-fast-1]
models:
  - name: grok-code-fast-1
    aliases: [grok-code-fast, grok-code-fast-1-0825]
    fallback:
      - model: xai/grok-code-fast-1
        api_key: os.environ/FLEET_XAI_KEY
        api_base: https://api.example
        timeout: 30
    overflow: true
  - name: other
admin_key: os.environ/FLEET_ADMIN
"""


def test_the_whole_fleet_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, monkeypatch, FLEET)
    monkeypatch.setenv("FLEET_VLLM_KEY", "vk-1")
    monkeypatch.setenv("FLEET_XAI_KEY", "xk-1")
    monkeypatch.setenv("FLEET_ADMIN", "adm")
    s = load_settings()
    plain, auth = s.workers
    assert plain.url == "http://10.0.0.4:8000" and plain.api_key is None and not plain.headers and plain.models == ()
    assert auth.url == "https://10.0.0.5:8000" and auth.api_key == "vk-1" and dict(auth.headers) == {"X-Pool": "a"}
    assert auth.models == ("grok-code-fast-1",) and auth.api_key_ref == "os.environ/FLEET_VLLM_KEY"
    assert "vk-1" not in repr(auth)  # the key never shows in a repr (logs)
    main, other = s.models
    assert isinstance(main, ModelSpec) and main.name == "grok-code-fast-1"
    assert main.aliases == ("grok-code-fast", "grok-code-fast-1-0825") and main.overflow is True
    assert main.fallback == (ProviderSpec(model="xai/grok-code-fast-1", api_key="xk-1", api_base="https://api.example",
                                          extra={"timeout": 30}),)
    assert other == ModelSpec(name="other", aliases=(), fallback=(), overflow=False)
    assert s.admin_key == "adm"  # os.environ/NAME works for any setting of the file


def test_gateway_workers_plain_urls_keep_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.setenv("GATEWAY_WORKERS", "http://a:8000/, https://b:8443")
    assert [w.url for w in Settings().workers] == ["http://a:8000", "https://b:8443"]


@pytest.mark.parametrize(("text", "where", "reason"), [
    ("workers:\n  - url: http://w:1\n    api_key: os.environ/FLEET_NOT_SET_ANYWHERE\n",
     "workers[0].api_key", "the environment variable FLEET_NOT_SET_ANYWHERE is not set"),
    ("workers:\n  - http://ok:1\n  - url: ftp://w\n", "workers[1].url", "http:// or https://"),
    ("workers:\n  - {url: 'http://w:1', colour: red}\n", "workers[0].colour", "unknown field"),
    ("workers:\n  - {url: 'http://w:1', headers: {Authorization: x}}\n", "workers[0].headers.Authorization",
     "set by the gateway itself"),
    ("models:\n  - {name: a, aliases: [b]}\n  - {name: c, aliases: [b]}\n", "models[1].aliases[0]",
     "'b' already names model 'a'"),
    ("models:\n  - {name: a, overflow: maybe}\n", "models[0].overflow", "expected true or false"),
    ("models:\n  - {name: a, fallback: [{api_key: k}]}\n", "models[0].fallback[0].model", "missing"),
    ("models:\n  - name: a\n    fallback:\n      - model: x/y\n        api_key: os.environ/FLEET_NOPE_KEY\n",
     "models[0].fallback[0].api_key", "FLEET_NOPE_KEY is not set"),
    ("admin_key: os.environ/FLEET_NOPE_ADMIN\n", "admin_key", "FLEET_NOPE_ADMIN is not set"),
    ("workers: [http://a:1\n", "line 2", "not valid YAML"),
    ("- just\n- a list\n", "", "must hold a mapping"),
    ("port: many\n", "port", "valid integer"),
])
def test_a_bad_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, where: str,
                                reason: str) -> None:
    cfg = _write(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"config file {cfg}: ")
    assert where in message and reason in message


def test_serve_refuses_a_bad_file_at_start_on_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text("workers:\n  - url: http://w:1\n    api_key: os.environ/FLEET_MISSING_AT_START\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_CONFIG": str(cfg), "XDG_DATA_HOME": str(tmp_path / "xdg")})
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: config file {cfg}: workers[0].api_key: the environment variable FLEET_MISSING_AT_START is not set"]
