"""A private 3-master Redis Cluster for tests: started on free ports, torn down afterwards."""

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
    """Three ``redis-server --cluster-enabled yes`` processes joined by ``redis-cli --cluster
    create`` (no replicas)."""

    def __init__(self, masters: int = 3) -> None:
        self.cli = tool("redis-cli")
        self.servers: list[RedisServer] = []
        for _ in range(masters):
            port = free_cluster_port()
            self.servers.append(
                RedisServer(
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "2000",
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
                [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            for server in self.servers:
                while "cluster_state:ok" not in self._info(server.port):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"cluster on port {server.port} never became ok")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def _info(self, port: int) -> str:
        done = subprocess.run(
            [self.cli, "-p", str(port), "cluster", "info"], capture_output=True, timeout=5
        )
        return done.stdout.decode()

    def stop(self) -> None:
        """Kill every node and remove its directory."""
        for server in self.servers:
            server.stop()
