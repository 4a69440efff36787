"""The CLI takes the same fleet fields as the admin API: a worker's key as ``os.environ/NAME`` (never a
literal, never shown), extra headers and models; model allow-lists of keys and organisations."""

from __future__ import annotations

import secrets

import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli_app
from tests.conftest import MODEL, Backend
from workersim.run import start_sim_process
from workersim.sim_settings import SimConfig


def test_workers_add_with_a_key_reference(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "vk-" + secrets.token_hex(8)
    var = "CLI_WORKER_KEY_" + secrets.token_hex(3).upper()
    monkeypatch.setenv("GATEWAY_DATABASE_URL", backend.database_url)
    monkeypatch.setenv(var, secret)
    runner = CliRunner()
    with start_sim_process(SimConfig(worker_id="cli-locked", time_scale=0.0, api_key=secret)) as sim:
        literal = runner.invoke(cli_app, ["workers", "add", sim.url, "--api-key", secret])
        assert literal.exit_code == 1 and "os.environ/NAME" in literal.output and secret not in literal.output
        without = runner.invoke(cli_app, ["workers", "add", sim.url])  # vLLM --api-key: /v1/models answers 401
        assert without.exit_code == 0 and "MISCONFIGURED" in without.stdout
        added = runner.invoke(cli_app, ["workers", "add", sim.url, "--api-key", f"os.environ/{var}",
                                        "--header", "X-Pool:a", "--models", MODEL])
        assert added.exit_code == 0, added.output
        row = added.stdout.strip().splitlines()[1].split()
        assert row[1:] == [sim.url, "admin", "yes", MODEL, f"os.environ/{var}"]
        listed = runner.invoke(cli_app, ["workers", "list"])
        assert f"os.environ/{var}" in listed.stdout and secret not in listed.stdout + added.stdout
        assert runner.invoke(cli_app, ["workers", "remove", row[0]]).exit_code == 0


def test_model_allow_lists_from_the_cli(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", backend.database_url)
    runner = CliRunner()
    org = "cli-models-" + secrets.token_hex(3)
    created = runner.invoke(cli_app, ["keys", "create", "--org", org, "--models", f"{MODEL},gcf"])
    assert created.exit_code == 0, created.output
    listed = runner.invoke(cli_app, ["keys", "list"])
    key_id = next(line.split()[0] for line in listed.stdout.splitlines() if org in line)
    changed = runner.invoke(cli_app, ["keys", "models", key_id, "any"])
    assert changed.exit_code == 0 and changed.stdout.strip() == f"{key_id}\tmodels=any"
    changed = runner.invoke(cli_app, ["keys", "models", key_id, "gcf"])
    assert changed.stdout.strip() == f"{key_id}\tmodels=gcf"
    limited = runner.invoke(cli_app, ["orgs", "models", org, MODEL])
    assert limited.exit_code == 0 and limited.stdout.strip().endswith(f"models={MODEL}")
    orgs = runner.invoke(cli_app, ["orgs", "list"])
    assert any(org in line and f"\tmodels={MODEL}\t" in line for line in orgs.stdout.splitlines())
