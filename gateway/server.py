"""The HTTP server: uvicorn configured from Settings, with the connection guard as its protocol.

``serve(settings, ...)`` is what ``gateway serve`` runs; ``server_config`` is what every server of the
gateway is built from (the main one, the metrics listener, the tests' in-loop servers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import tempfile
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from gateway.config import Settings
from gateway.connection_guard import ConnectionLimits, GuardedConfig

log = logging.getLogger("gateway.server")

# Open files a server process keeps for itself beside its client connections: listening sockets,
# the database, Redis, logs, the metrics files of multiprocess mode.
_RESERVED_FILES = 256


def connection_limits(settings: Settings, max_connections: int | None = None) -> ConnectionLimits:
    return ConnectionLimits(
        max_connections=max_connections or settings.client_max_connections,
        header_timeout_s=settings.client_header_timeout_s,
        body_timeout_s=settings.client_body_timeout_s,
        max_header_bytes=settings.client_max_header_bytes,
        max_headers=settings.client_max_headers,
    )


def server_config(app: Any, settings: Settings, max_connections: int | None = None,
                  **options: Any) -> GuardedConfig:
    """uvicorn's Config for ``app`` (an ASGI app or an import string) under the gateway's limits;
    ``options`` are uvicorn's (host, port, workers, loop...)."""
    values: dict[str, Any] = {
        "ws": "none", "access_log": False, "log_level": "warning", "server_header": False,
        "timeout_keep_alive": settings.client_keepalive_timeout_s, **options,
    }
    return GuardedConfig(app, connection_limits(settings, max_connections), **values)


def fit_open_files(settings: Settings) -> int:
    """Raise this process's soft open-file limit as far as allowed, and return the client connection cap
    that fits under it (upstream connections and the reserve stay available)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.client_max_connections + settings.upstream_max_connections + _RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("open-file limit stays at %d: %s", soft, exc)
    if soft == resource.RLIM_INFINITY:
        return settings.client_max_connections
    fits = max(16, soft - settings.upstream_max_connections - _RESERVED_FILES)
    if fits < settings.client_max_connections:
        log.warning("client connections capped at %d per process (open-file limit %d; GATEWAY_CLIENT_MAX_"
                    "CONNECTIONS is %d)", fits, soft, settings.client_max_connections)
        return fits
    return settings.client_max_connections


def serve(settings: Settings, host: str | None = None, port: int | None = None, processes: int = 1) -> None:
    """Run the gateway until interrupted: one process, or ``processes`` sharing the listening socket."""
    if processes > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Metrics of all server processes are summed from files in a folder of this invocation's own,
        # so a second gateway on the same host never mixes or wipes them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    config = server_config("gateway.app:create_app", settings, max_connections=fit_open_files(settings),
                           factory=True, host=host or settings.host, port=port or settings.port,
                           workers=processes, loop="uvloop")
    if processes > 1:
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's exit status for a start-up failure
