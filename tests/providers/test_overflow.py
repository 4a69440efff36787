"""Overflow: with ``overflow: true`` a request goes to the hosted provider while every worker of the model is
saturated (its queue at GATEWAY_OVERFLOW_WAITING_REQUESTS), and to the workers otherwise; a worker that
fails before its first byte falls back too. The organisation's policy goes through the CLI as well."""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli_app
from tests.conftest import MODEL, Backend, served
from tests.providers.provider_fixtures import fallback_gateway

pytestmark = pytest.mark.parametrize("backend", ["embedded"], indirect=True)


class QueuedWorker:
    """An OpenAI-compatible worker whose /metrics report ``waiting`` queued requests (an outside-world fake);
    with ``fail`` it answers every chat request 500."""

    def __init__(self, waiting: int, fail: bool = False) -> None:
        self.waiting = waiting
        self.fail = fail
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        while (await receive()).get("more_body"):
            pass
        status = 200
        if path == "/v1/models":
            body = orjson.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        elif path == "/metrics":
            body = f"vllm:num_requests_waiting {self.waiting}\n".encode()
        elif path == "/health":
            body = b"ok"
        else:
            self.requests += 1
            status = 500 if self.fail else 200
            body = orjson.dumps({"id": "w", "object": "chat.completion", "model": MODEL, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "from the worker"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _ask(env: Any) -> str:
    client = env.client()
    answer = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                  max_tokens=2)
    await client.close()
    return str(answer.choices[0].message.content)


async def test_overflow_only_while_every_worker_is_saturated(backend: Backend) -> None:
    worker = QueuedWorker(waiting=50)
    async with served(worker) as url, fallback_gateway(backend, ("xai",), workers=[url], overflow=True,
                                                       overflow_waiting_requests=8) as env:
        assert await _ask(env) == "w0 w1"  # saturated: the provider
        worker.waiting = 0
        await env.gateway.app.runtime.pool.check_all()  # the next scrape
        assert await _ask(env) == "from the worker"
        assert (worker.requests, env.providers[0].requests) == (1, 1)
        stats = env.gateway.app.runtime.providers.stats()["gateway_provider_requests_total"]
        assert stats == [({"provider": "xai/grok-code-fast-1", "reason": "overflow", "result": "ok"}, 1.0)]


async def test_no_overflow_unless_the_model_allows_it(backend: Backend) -> None:
    worker = QueuedWorker(waiting=50)
    async with served(worker) as url, fallback_gateway(backend, ("xai",), workers=[url], overflow=False) as env:
        assert await _ask(env) == "from the worker"
        assert env.providers[0].requests == 0


async def test_failed_workers_fall_back_before_any_byte(backend: Backend) -> None:
    worker = QueuedWorker(waiting=0, fail=True)
    async with served(worker) as url, fallback_gateway(backend, ("xai",), workers=[url]) as env:
        assert await _ask(env) == "w0 w1"
        assert worker.requests >= 1 and env.providers[0].requests == 1


def test_the_policy_through_the_cli(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", backend.database_url)
    runner = CliRunner()
    name = "cli-providers-" + secrets.token_hex(3)
    assert runner.invoke(cli_app, ["keys", "create", "--org", name]).exit_code == 0
    forbid = runner.invoke(cli_app, ["orgs", "providers", name, "--forbid"])
    assert forbid.exit_code == 0, forbid.output
    org_id, policy = forbid.stdout.strip().split("\t")
    assert policy == "providers=forbidden"
    listed = runner.invoke(cli_app, ["orgs", "list"]).stdout
    assert f"{org_id}\t{name}\tplan=-\tmodels=any\tproviders=forbidden" in listed
    again = runner.invoke(cli_app, ["orgs", "providers", org_id, "--default"])
    assert again.stdout.strip() == f"{org_id}\tproviders=default"
    both = runner.invoke(cli_app, ["orgs", "providers", name, "--allow", "--forbid"])
    assert both.exit_code == 2
    unknown = runner.invoke(cli_app, ["orgs", "providers", "no-such-org", "--allow"])
    assert unknown.exit_code == 2 and "no-such-org" in unknown.output
