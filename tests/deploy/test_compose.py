"""The compose stack validates against the Compose Specification's JSON schema (vendored, so CI pulls no
image and needs no Docker), and wires what it promises: two gateways, Redis, PostgreSQL, three simulated
workers, Prometheus with the shipped rules, Grafana with the shipped dashboard; the Dockerfile builds a
multi-stage, non-root image."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.manifests import DEPLOY, ROOT
from tests.deploy.test_k8s import _check_cli

COMPOSE = DEPLOY / "compose"
SCHEMA = json.loads((COMPOSE / "schema" / "compose-spec.json").read_text())


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return loaded


def check(doc: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(doc)


def test_compose_file_matches_the_spec(stack: dict[str, Any]) -> None:
    check(stack)
    broken = copy.deepcopy(stack)
    broken["services"]["gateway-1"]["enviroment"] = {}  # a misspelt key is refused
    with pytest.raises(jsonschema.ValidationError):
        check(broken)
    broken = copy.deepcopy(stack)
    broken["services"]["redis"]["healthcheck"]["retries"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        check(broken)


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts: container path -> host path (relative to the compose file)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = (COMPOSE / source).resolve()
    return found


def test_the_stack_has_every_part(stack: dict[str, Any]) -> None:
    services = stack["services"]
    gateways = [n for n, s in services.items() if s.get("command") == ["serve"]]
    sims = [n for n, s in services.items() if (s.get("command") or [""])[0] == "sim"]
    assert len(gateways) == 2 and len(sims) == 3
    assert {"redis", "postgres", "prometheus", "grafana", "migrate"} <= set(services)
    for name in gateways:
        env = services[name]["environment"]
        assert env["GATEWAY_WORKERS"].split(",") == [f"http://{s}:8000" for s in sims]
        assert env["GATEWAY_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["GATEWAY_DATABASE_URL"]
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["user"] == "10001:10001" and services[name]["read_only"] is True
    # the gateway image's verbs are real CLI verbs
    for name in (*gateways, *sims):
        _check_cli(services[name]["command"])
    for part in services["migrate"]["command"][0].split("&&"):
        words = shlex.split(part)
        assert words[0] == "gateway"
        _check_cli(words[1:])


def test_every_bind_mount_exists(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        for target, source in _mounts(service).items():
            assert source.exists(), f"{name}: {source} (for {target}) is missing"


def test_prometheus_loads_the_shipped_rules_and_scrapes_both_gateways(stack: dict[str, Any]) -> None:
    mounts = _mounts(stack["services"]["prometheus"])
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    for rule_file in config["rule_files"]:
        assert mounts[rule_file] == (DEPLOY / "prometheus" / Path(rule_file).name).resolve()
    assert "/etc/prometheus/rules/gateway-alerts.yml" in config["rule_files"]
    targets = [t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]]
    port = stack["x-gateway-env"]["GATEWAY_METRICS_ADDRESS"].rsplit(":", 1)[1]
    assert sorted(targets) == [f"gateway-1:{port}", f"gateway-2:{port}"]


def test_grafana_provisions_the_shipped_dashboard(stack: dict[str, Any]) -> None:
    mounts = _mounts(stack["services"]["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "gateway.yaml").read_text())["providers"]
    folder = providers[0]["options"]["path"]
    dashboard = mounts[f"{folder}/gateway-dashboard.json"]
    assert dashboard == (DEPLOY / "grafana" / "gateway-dashboard.json").resolve()
    assert json.loads(dashboard.read_text())["uid"] == "llm-gateway"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert [s["type"] for s in sources] == ["prometheus"] and sources[0]["url"] == "http://prometheus:9090"


def _dockerfile_lines() -> list[str]:
    """The Dockerfile's instructions, comments dropped and continued lines joined."""
    joined = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    lines = _dockerfile_lines()
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(stages) >= 2
    final = lines[stages[-1]:]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0") and users[-1].split(":")[0].isdigit()
    assert not any(line.startswith("RUN pip") for line in final)  # built in the first stage, copied over


def test_dockerfile_base_is_slim_pinned_and_the_same_in_both_stages() -> None:
    lines = _dockerfile_lines()
    base = next(line.split("=", 1)[1] for line in lines if line.startswith("ARG PYTHON_IMAGE="))
    # A Python minor and a Debian release (a bare "3.11-slim" moves to the next Debian on its own).
    assert base.startswith("python:3.11-slim-") and base.rsplit("-", 1)[1] in ("bookworm", "trixie"), base
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert set(froms) == {"${PYTHON_IMAGE}"}  # the wheels built in the first stage match the runtime's libc


def test_dockerfile_installs_no_test_tools_and_caches_the_dependencies_apart() -> None:
    lines = _dockerfile_lines()
    installs = [line for line in lines if "pip install" in line]
    assert installs and not any("[test]" in line or ".[" in line for line in installs)
    first_code = next(i for i, line in enumerate(lines) if line.startswith("COPY gateway"))
    dependencies = next(i for i, line in enumerate(lines) if "-r /tmp/requirements.txt" in line)
    assert dependencies < first_code  # a code change does not reinstall the dependencies
    assert any("--no-deps ." in line for line in lines[first_code:])


def test_dockerignore_keeps_the_repository_and_secrets_out_of_the_context() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests", ".env", ".env.*", "test-artifacts"} <= ignored
    copied = {line.split()[1] for line in _dockerfile_lines() if line.startswith("COPY ") and "--from" not in line}
    assert not {c.rstrip("/") for c in copied} & ignored  # nothing the Dockerfile copies is left out
