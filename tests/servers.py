"""Real servers that tests start and stop themselves."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

__all__ = ["MissingTool", "RedisServer", "free_port", "launch_replica", "tool", "wait_for_port"]


class MissingTool(RuntimeError):
    """A program the suite needs is not installed: the test fails (it never skips)."""


def tool(name: str) -> str:
    """The path of the program ``name``, also where Debian puts daemons (/usr/sbin, off a
    user's PATH); a missing one fails the test saying how to get it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise MissingTool(
            f"{name} is not installed: `make test` installs it (as root; the package list is "
            "in scripts/provision)"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on ``port`` (polls; no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def launch_replica(
    workdir: Path, env: dict[str, str], name: str, config: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``gatekeeper serve`` with ``config`` (its listener filled in) and wait until it
    answers ``/health`` itself. A free port can be taken by someone else between choosing and
    binding it (the machine is shared): then the replica exits and starts again on another port.
    Its output goes to ``workdir/<name>.log``, shown if it never comes up."""
    for _attempt in range(3):
        port = free_port()
        path = workdir / f"{name}.yaml"
        path.write_text(json.dumps({**config, "listener": {"host": "127.0.0.1", "port": port}}))
        with (workdir / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "gatekeeper", "serve", "--config", str(path)],
                cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                wait_for_port(port, 0.5)
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            except (TimeoutError, httpx.HTTPError):
                continue
            if health.status_code == 200 and process.poll() is None:
                return process, port
        if process.poll() is None:
            process.kill()
            process.wait()
            break
    pytest.fail((workdir / f"{name}.log").read_text()[-3000:])


class RedisServer:
    """A private ``redis-server`` process: kill it, pause it (SIGSTOP), restart it."""

    def __init__(self, port: int | None = None, *extra: str) -> None:
        self.binary = tool("redis-server")
        self.port = port or free_port()
        self.extra = list(extra)
        self.dir = tempfile.mkdtemp(prefix="gk-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, *self.extra]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.resume()
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
