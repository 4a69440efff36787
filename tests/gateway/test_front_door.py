"""What a person or a client meets first: ``GET /``, the API docs (served without a network), the OpenAPI
schema with the OpenAI endpoints, and an ``x-request-id`` on every response of every route."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from tests.conftest import ADMIN_KEY, MODEL

_ID = re.compile(r"^req_[0-9a-f]{24}$")


async def test_every_response_carries_a_request_id(gateway: Any, api_key: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    key = {"Authorization": f"Bearer {api_key}"}
    cases = [
        ("GET", "/", {}, None, 200), ("GET", "/health", {}, None, 200), ("GET", "/ready", {}, None, 200),
        ("GET", "/metrics", {}, None, 200), ("GET", "/docs", {}, None, 200), ("GET", "/openapi.json", {}, None, 200),
        ("GET", "/docs/static/swagger-ui.css", {}, None, 200), ("GET", "/dashboard", {}, None, 200),
        ("GET", "/dashboard/static/dashboard.js", {}, None, 200), ("GET", "/v1/models", key, None, 200),
        ("GET", "/v1/models", {}, None, 401), ("GET", "/admin/orgs", admin, None, 200),
        ("GET", "/admin/orgs", {}, None, 401), ("GET", "/admin/keys/key_nope", admin, None, 404),
        ("POST", "/admin/orgs", admin, {"nme": "typo"}, 400), ("GET", "/v1/usage", key, None, 200),
        ("GET", "/v1/organization", key, None, 200), ("GET", "/no/such/route", {}, None, 404),
        ("DELETE", "/health", {}, None, 405),
        ("POST", "/v1/chat/completions", key, {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                               "max_tokens": 1}, 200),
        ("POST", "/v1/completions", key, {"model": MODEL}, 400),
    ]
    seen = set()
    async with aiohttp.ClientSession() as http:
        for method, path, headers, body, expected in cases:
            async with http.request(method, gateway.url + path, headers=headers, json=body) as resp:
                await resp.read()
                assert resp.status == expected, (method, path, resp.status)
                request_id = resp.headers.get("x-request-id", "")
                assert _ID.match(request_id), (method, path, request_id)
                assert resp.headers.getall("x-request-id") == [request_id], (method, path)
                seen.add(request_id)
    assert len(seen) == len(cases)  # one per response, never reused


async def test_front_door_points_to_the_docs_and_the_dashboard(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http, http.get(gateway.url + "/") as resp:
        body = await resp.json()
    assert resp.status == 200 and body["object"] == "gateway"
    assert body["links"]["docs"] == "/docs" and body["links"]["dashboard"] == "/dashboard"
    assert body["version"]


async def test_docs_work_offline(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/docs") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            html = await resp.text()
        assert "SwaggerUIBundle" in html
        assert not re.findall(r"https?://", html), "the docs page names an outside URL"
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert {"/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"} <= set(assets)
        for asset in assets:
            async with http.get(gateway.url + asset) as resp:
                data = await resp.read()
                assert resp.status == 200 and len(data) > 100, asset
        async with http.get(gateway.url + "/docs/static/swagger-ui-bundle.js") as resp:
            bundle = await resp.text()
        assert "SwaggerUIBundle" in bundle and "sourceMappingURL" not in bundle
        async with http.get(gateway.url + "/docs/static/..%2Fdashboard.html") as resp:
            assert resp.status == 404
        for cdn_page in ("/redoc", "/docs/oauth2-redirect"):
            async with http.get(gateway.url + cdn_page) as resp:
                assert resp.status == 404, cdn_page


async def test_openapi_documents_the_openai_endpoints(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http, http.get(gateway.url + "/openapi.json") as resp:
        schema = await resp.json()
    schemas = schema["components"]["schemas"]
    for path, request, field in (("/v1/chat/completions", "ChatCompletionRequest", "messages"),
                                 ("/v1/completions", "CompletionRequest", "prompt")):
        post = schema["paths"][path]["post"]
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{request}"
        body = schemas[request]
        assert {"model", field, "stream"} <= set(body["properties"]) and {"model", field} <= set(body["required"])
        assert "text/event-stream" in post["responses"]["200"]["content"]
        for status in ("400", "401", "429", "503"):
            error = post["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert error == "#/components/schemas/ErrorResponse"
    assert set(schemas["ErrorDetail"]["properties"]) == {"message", "type", "param", "code"}
    for ref_holder in re.findall(r'"\$ref": ?"#/components/schemas/([^"]+)"', str(schema).replace("'", '"')):
        assert ref_holder in schemas, ref_holder  # every reference resolves
    assert "/v1/models" in schema["paths"] and "/admin/orgs" in schema["paths"]
