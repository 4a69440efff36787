"""Bad input gets a clear error in OpenAI's shape with the right status: never a 500, never a hang."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import MODEL, Backend, gateway_settings, serve_gateway


def assert_openai_error(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "grok-code-fast-1"}', "messages"),
        (b'{"model": "grok-code-fast-1", "messages": "hello"}', "messages"),
        (b'{"model": "grok-code-fast-1", "messages": []}', "messages"),
        (b'{"model": "grok-code-fast-1", "messages": [{"content": "no role"}]}', "messages[0].role"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "grok-code-fast-1", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": "grok-code-fast-1", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}',
         "max_tokens"),
        (b'{"model": "grok-code-fast-1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
         "max_tokens"),
    ],
)
async def test_invalid_chat_requests_are_400(gateway: Any, api_key: str, payload: bytes, param: str | None) -> None:
    async with aiohttp.ClientSession() as http, http.post(
        gateway.url + "/v1/chat/completions", data=payload,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        err = assert_openai_error(await resp.json())
        assert err["type"] == "invalid_request_error"
        assert err["param"] == param
        assert resp.headers["x-request-id"].startswith("req_")


async def test_completions_without_prompt_is_400(gateway: Any, api_key: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(
        gateway.url + "/v1/completions", json={"model": MODEL}, headers={"x-api-key": api_key},
    ) as resp:
        assert resp.status == 400
        assert assert_openai_error(await resp.json())["param"] == "prompt"


async def test_missing_key_is_401(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http, http.post(
        gateway.url + "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
    ) as resp:
        assert resp.status == 401
        assert assert_openai_error(await resp.json())["code"] == "missing_api_key"


async def test_x_api_key_header_is_accepted(gateway: Any, api_key: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(
        gateway.url + "/v1/chat/completions", headers={"x-api-key": api_key},
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["usage"]["completion_tokens"] == 2


async def test_wrong_method_is_405(gateway: Any, api_key: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(
        gateway.url + "/v1/chat/completions", headers={"x-api-key": api_key}
    ) as resp:
        assert resp.status == 405
        assert_openai_error(await resp.json())


async def test_body_over_limit_is_413(backend: Backend, sims: Any) -> None:
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims], max_body_bytes=1000))
    try:
        rt = served.app.runtime
        org = await rt.keys.get_or_create_org("limit-org")
        key = (await rt.keys.create_key(org.id, "k")).key
        big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]}
        async with aiohttp.ClientSession() as http:
            async with http.post(served.url + "/v1/chat/completions", json=big, headers={"x-api-key": key}) as resp:
                assert resp.status == 413
                assert assert_openai_error(await resp.json())["code"] == "request_too_large"

            async def chunked() -> Any:  # no content-length: the limit holds while streaming the body in
                for _ in range(10):
                    yield b"x" * 500

            async with http.post(served.url + "/v1/chat/completions", data=chunked(),
                                 headers={"x-api-key": key}) as resp:
                assert resp.status == 413
    finally:
        await served.stop()


async def test_no_healthy_worker_is_503(backend: Backend, sims: Any) -> None:
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims]))
    try:
        rt = served.app.runtime
        org = await rt.keys.get_or_create_org("no-worker-org")
        key = (await rt.keys.create_key(org.id, "k")).key
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
        for s in sims:
            s.app.set_healthy(False)
        await rt.pool.check_all()
        async with aiohttp.ClientSession() as http, http.post(
            served.url + "/v1/chat/completions", json=body, headers={"x-api-key": key}
        ) as resp:
            assert resp.status == 503
            assert assert_openai_error(await resp.json())["code"] == "no_worker_available"
        async with aiohttp.ClientSession() as http, http.get(served.url + "/ready") as resp:
            assert resp.status == 503
    finally:
        for s in sims:
            s.app.set_healthy(True)
        await served.stop()
