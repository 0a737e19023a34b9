"""Loopback helpers shared by the benchmarks that start servers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["ensure_redis", "free_port", "wait_port"]

_DEFAULT_REDIS = "redis://127.0.0.1:6379/15"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    """Block until something accepts connections on ``port`` (a server's start-up can be slow
    while the machine is busy, hence the generous default)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _answers(url: str) -> bool:
    """Whether a Redis answers PING at ``url``."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def ensure_redis() -> Callable[[], None] | None:
    """Make ``GATEKEEPER_BENCH_REDIS_URL`` (default: db 15 of a local Redis) answer: when
    nothing does, start a private ``redis-server`` on a free port and point the variable at
    it. Returns the function that stops it (None when the configured one answered)."""
    url = os.environ.get("GATEKEEPER_BENCH_REDIS_URL", _DEFAULT_REDIS)
    if _answers(url):
        os.environ["GATEKEEPER_BENCH_REDIS_URL"] = url
        return None
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="gk-bench-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port, 30)
    os.environ["GATEKEEPER_BENCH_REDIS_URL"] = f"redis://127.0.0.1:{port}/15"
    print(f"{url} does not answer: the benchmarks use a private redis-server on port {port}")

    def stop() -> None:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)

    return stop
