"""A private Redis Cluster for tests (3 masters with a replica each, by default): started on
free ports, torn down afterwards. :meth:`RedisClusterServers.master_for` and
:meth:`RedisClusterServers.wait_for_promotion` serve the failover tests."""

from __future__ import annotations

import random
import socket
import subprocess
import time

from tests.servers import RedisServer, tool

__all__ = ["RedisClusterServers", "free_cluster_port"]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterServers:
    """``masters * (1 + replicas)`` ``redis-server --cluster-enabled yes`` processes joined by
    ``redis-cli --cluster create``. ``node_timeout`` (ms) is how long a master may be silent
    before its replica takes over."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout: int = 2000) -> None:
        self.cli = tool("redis-cli")
        self.replicas = replicas
        self.servers: list[RedisServer] = []
        for _ in range(masters * (1 + replicas)):
            port = free_cluster_port()
            self.servers.append(
                RedisServer(
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    str(node_timeout),
                )
            )

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def start(self, timeout: float = 20.0) -> None:
        """Start the nodes, create the cluster and wait until every node reports it ok."""
        try:
            for server in self.servers:
                server.start()
            addresses = [f"127.0.0.1:{s.port}" for s in self.servers]
            subprocess.run(
                [self.cli, "--cluster", "create", *addresses, "--cluster-replicas",
                 str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            for server in self.servers:
                while not self._ready(server.port):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"cluster on port {server.port} never became ok")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def _ready(self, port: int) -> bool:
        """The node sees the cluster ok, and a replica is in sync with its master."""
        if "cluster_state:ok" not in self._cli(port, "cluster", "info"):
            return False
        replication = self._cli(port, "info", "replication")
        return "role:master" in replication or "master_link_status:up" in replication

    def _cli(self, port: int, *args: str) -> str:
        done = subprocess.run([self.cli, "-p", str(port), *args], capture_output=True, timeout=5)
        return done.stdout.decode()

    def role(self, port: int) -> str:
        """``master`` or ``slave``, as the node at ``port`` says now."""
        for line in self._cli(port, "info", "replication").splitlines():
            if line.startswith("role:"):
                return line.partition(":")[2].strip()
        return "unknown"

    def master_for(self, slot_key: str) -> RedisServer:
        """The server that is master of ``slot_key``'s slot now."""
        slot = int(self._cli(self.servers[0].port, "cluster", "keyslot", slot_key).strip())
        for line in self._cli(self.servers[0].port, "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(fields[1].partition("@")[0].rpartition(":")[2])
                    return next(s for s in self.servers if s.port == port)
        raise LookupError(f"no master serves {slot_key!r}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A replica of ``master``."""
        node_id = self._cli(master.port, "cluster", "myid").strip()
        for line in self._cli(master.port, "cluster", "nodes").splitlines():
            fields = line.split()
            if fields[3] == node_id:
                port = int(fields[1].partition("@")[0].rpartition(":")[2])
                return next(s for s in self.servers if s.port == port)
        raise LookupError(f"no replica of the master on port {master.port}")

    def wait_for_promotion(self, replica: RedisServer, timeout: float = 20.0) -> float:
        """Block until ``replica`` is a master and its cluster is ok; the seconds it took."""
        started = time.monotonic()
        while self.role(replica.port) != "master" or not self._ready(replica.port):
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the replica on port {replica.port} was never promoted")
            time.sleep(0.05)
        return time.monotonic() - started

    def stop(self) -> None:
        """Kill every node and remove its directory."""
        for server in self.servers:
            server.stop()
