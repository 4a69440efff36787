"""Schemathesis against the app's own OpenAPI schema (admin, partner, usage and /v1 routes): whatever it
sends, valid or not, the gateway answers without a server error.

The schema is the app's, read at collection (building the app reads no state); the requests go to a
live gateway (tests/fuzz/conftest.py)."""

from __future__ import annotations

from typing import Any

import requests
import schemathesis
from schemathesis.config import SchemathesisConfig

from gateway.app import create_app
from gateway.config import Settings
from tests.fuzz.conftest import EXAMPLES, SEED, LiveGateway

CONFIG = SchemathesisConfig.from_dict({
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
})
schema = schemathesis.openapi.from_dict(create_app(Settings()).api.openapi(), config=CONFIG)


INT64 = 2**63


@schema.parametrize()
def test_no_server_error(case: Any, live_gateway: LiveGateway) -> None:
    key = live_gateway.admin_key if case.path.startswith("/admin") else live_gateway.api_key
    response = case.call(base_url=live_gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command()}")


def test_admin_limits_past_64_bits_are_400(live_gateway: LiveGateway) -> None:
    response = requests.post(live_gateway.url + "/admin/plans", json={"name": "big", "concurrency": INT64},
                             headers={"Authorization": f"Bearer {live_gateway.admin_key}"}, timeout=30)
    assert response.status_code == 400
