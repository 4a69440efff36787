"""A throwaway 6-node Redis Cluster (3 masters, 3 replicas) of redis-server processes on free loopback
ports, for the cluster suites and the failover test (never the shared Redis on 6379).

``redis-cli --cluster create ... --cluster-replicas 1`` pairs each master with a replica; the node
timeout is short (``node_timeout_ms``) so that a killed master's replica takes over within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free port under 55536 whose cluster bus port (+10000) is free as well."""
    for _ in range(1000):
        port = random.randint(20000, 45000)
        if port not in taken and _bindable(port) and _bindable(port + 10000):
            taken.add(port)
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class ClusterNode:
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class PrivateCluster:
    size: int = 6
    replicas: int = 1  # per master (size 3 with 0: three masters, no failover)
    node_timeout_ms: int = 1500
    password: str | None = None
    nodes: list[ClusterNode] = field(default_factory=list)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gw-cluster-")))

    @property
    def url(self) -> str:
        """Any node will do: the gateway finds the rest. The first one (a master at the start)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.nodes[0].address}/0"

    def node_url(self, node: ClusterNode) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{node.address}/0"

    def _spawn(self, node: ClusterNode) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for the cluster tests"
        args = [binary, "--port", str(node.port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-config-file", str(node.data_dir / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms), "--save", "", "--appendonly", "no",
                "--dir", str(node.data_dir), "--cluster-replica-validity-factor", "0"]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        node.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def start(self) -> None:
        taken: set[int] = set()
        for i in range(self.size):
            data = self.root / f"n{i}"
            data.mkdir()
            node = ClusterNode(cluster_port(taken), data)
            self.nodes.append(node)
            self._spawn(node)
        for node in self.nodes:
            await self._wait_ping(node)
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is needed for the cluster tests"
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        done = await asyncio.create_subprocess_exec(
            cli, *auth, "--cluster", "create", *[n.address for n in self.nodes], "--cluster-replicas",
            str(self.replicas), "--cluster-yes", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await done.communicate()
        if done.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed: " + out.decode(errors="replace")[-2000:])
        await self.wait_healthy()

    async def _wait_ping(self, node: ClusterNode) -> None:
        client = Redis.from_url(self.node_url(node))
        try:
            for _ in range(250):
                with contextlib.suppress(OSError, RedisError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.02)
            raise RuntimeError(f"redis-server on {node.port} did not start")
        finally:
            await client.aclose()

    async def wait_healthy(self, timeout_s: float = 30.0, masters: int = 3) -> None:
        """Until every live node says cluster_state:ok and sees ``masters`` masters serving all slots."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self._healthy(masters):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the private Redis Cluster did not become healthy")

    async def _healthy(self, masters: int) -> bool:
        for node in self.nodes:
            if not node.alive:
                continue
            client = Redis.from_url(self.node_url(node))
            try:
                info = await client.cluster("info")
                slots = await client.cluster("slots")
            except (OSError, RedisError):
                return False
            finally:
                await client.aclose()
            text = info if isinstance(info, str) else str(info)
            if "cluster_state:ok" not in text and not (isinstance(info, dict) and info.get("cluster_state") == "ok"):
                return False
            owners = {(s[2][0], s[2][1]) for s in slots} if isinstance(slots, list) else set(slots)
            if len(owners) != masters:
                return False
        return True

    async def master_of(self, key: str) -> ClusterNode:
        """The node that serves ``key``'s slot now."""
        client = RedisCluster.from_url(self.url)
        try:
            await client.initialize()
            node = client.get_node_from_key(key)
            assert node is not None
            port = int(node.port)
        finally:
            await client.aclose()
        return next(n for n in self.nodes if n.port == port)

    async def masters(self) -> list[ClusterNode]:
        client = Redis.from_url(self.url)
        try:
            slots = await client.execute_command("CLUSTER", "SLOTS")
        finally:
            await client.aclose()
        ports = {int(entry[2][1]) for entry in slots}
        return [n for n in self.nodes if n.port in ports]

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.asynccontextmanager
async def private_cluster(**options: object) -> AsyncIterator[PrivateCluster]:
    cluster = PrivateCluster(**options)  # type: ignore[arg-type]
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()
