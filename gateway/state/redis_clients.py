"""Building the Redis clients for one URL: single node or Redis Cluster, found by itself.

``GATEWAY_REDIS_URL`` may name one Redis or any node of a cluster. With ``GATEWAY_REDIS_CLUSTER=auto``
the lifespan asks that node ``INFO cluster`` once at start (``cluster_enabled:1``); ``yes`` / ``no``
say it instead (for a gateway that must start while Redis is down: ``auto`` then assumes a single
node and says so in the log). Then:

- the hot path's lean client: ``RespClient`` (one connection) or ``ClusterResp`` (one per master,
  slot map, MOVED / ASK, failover), for ``redis://`` and ``rediss://``; ``unix://`` goes through redis-py;
- redis-py for everything off the hot path (ledger stream, locks, health): ``Redis`` or ``RedisCluster``
  (which follows redirects and failovers itself).

Both read the password, the ACL user (``redis://user:password@host``) and TLS (``rediss://``, with
redis-py's ``ssl_*`` query options) from the same URL; a cluster's nodes share them.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from gateway.state.resp import RespClient
from gateway.state.resp_cluster import ClusterResp

log = logging.getLogger("gateway.state")

AnyRedis = Redis | RedisCluster


async def is_cluster(url: str, setting: str, timeout_s: float) -> bool:
    """Whether ``url`` names a Redis Cluster node (``setting``: auto, yes, no)."""
    if setting != "auto":
        return setting == "yes"
    probe = Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        info = await probe.info("cluster")
    except (RedisError, OSError) as exc:
        log.warning("Redis at %s did not answer INFO cluster (%s): assuming a single node; set "
                    "GATEWAY_REDIS_CLUSTER=yes if it is a cluster", redacted(url), exc)
        return False
    finally:
        await probe.aclose()
    enabled = bool(int(info.get("cluster_enabled", 0)))
    if enabled:
        log.info("Redis at %s is a Redis Cluster node: routing by slot", redacted(url))
    return enabled


def redis_client(url: str, cluster: bool, timeout_s: float) -> AnyRedis:
    if cluster:
        return RedisCluster.from_url(url, socket_connect_timeout=timeout_s)
    return Redis.from_url(url, socket_connect_timeout=timeout_s)


def lean_client(url: str, cluster: bool, timeout_s: float) -> RespClient | ClusterResp | None:
    """The hot path's client, or None where only redis-py speaks the URL (unix sockets)."""
    if not url.startswith(("redis://", "rediss://")):
        return None
    if cluster:
        return ClusterResp(url, reply_timeout=timeout_s)
    return RespClient(url, reply_timeout=timeout_s)


def redacted(url: str) -> str:
    """The URL without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user + ':***' if user else '***'}@{host}"
