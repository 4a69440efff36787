"""Settings come from GATEWAY_* variables and an optional YAML file; the environment wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import Settings


def test_env_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WORKERS", "http://a:8000/, http://b:8000")
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", "secret")
    s = Settings()
    assert [w.url for w in s.workers] == ["http://a:8000", "http://b:8000"]
    assert s.redis_url == "redis://r:6379/0" and s.admin_key == "secret"
    assert s.sqlalchemy_url == "postgresql+asyncpg://u@h/db"


def test_workers_as_a_json_array(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WORKERS", '["http://a:8000/", "http://b:8000"]')
    assert [w.url for w in Settings().workers] == ["http://a:8000", "http://b:8000"]


def test_yaml_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("workers: [http://y:1]\nport: 9000\nadmin_key: from-file\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", "from-env")
    s = Settings()
    assert [w.url for w in s.workers] == ["http://y:1"] and s.port == 9000
    assert s.admin_key == "from-env"


def test_embedded_default_is_sqlite_in_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.redis_url == "" and s.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/gateway.db"


@pytest.mark.parametrize("value", ["-1", "inf", "nan", "1e12", "soon"])
def test_the_index_refresh_is_a_finite_span(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past a day (the index's TTL) or infinite, the milliseconds the route script takes would not fit:
    refused when the settings load, not at start-up with a traceback."""
    monkeypatch.setenv("GATEWAY_ROUTING_INDEX_REFRESH_S", value)
    with pytest.raises(ValidationError):
        Settings()
