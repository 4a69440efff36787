"""Fixtures of the routing tests: a throwaway redis-server of a test's own (never the shared one)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.private_redis import PrivateRedis

OwnRedis = PrivateRedis


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.kill()
    shutil.rmtree(server.data_dir, ignore_errors=True)
