"""A ``gatekeeper serve`` process of the tests' own (for signals and memory measurements)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.servers import free_port, wait_for_port

ADMIN_TOKEN = "test-admin-token-0123456789"


class GatewayProcess:
    """``python -m gatekeeper serve --config <file>`` on a free port (``env``: more settings)."""

    def __init__(
        self, tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.env = dict(env or {})
        self.path = tmp_path / "gatekeeper.yaml"
        self.log = tmp_path / "gatekeeper.log"
        self.write(config)
        self.process: subprocess.Popen[bytes] | None = None

    def write(self, config: dict[str, Any]) -> None:
        config = dict(config)
        config["listener"] = {**config.get("listener", {}), "host": "127.0.0.1",
                              "port": self.port}  # fmt: skip
        self.path.write_text(yaml.safe_dump(config))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        env = dict(
            os.environ,
            GATEKEEPER_REDIS_URL="",
            GATEKEEPER_ADMIN_TOKEN=ADMIN_TOKEN,
            GATEKEEPER_LOG_LEVEL="warning",
            GATEKEEPER_DATABASE_URL=f"sqlite+aiosqlite:///{self.path.parent / 'gk.db'}",
            GATEKEEPER_JWT_SECRET="x" * 40,
        )
        env.update(self.env)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gatekeeper", "serve", "--config", str(self.path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for_port(self.port, timeout=30)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def rss_kib(self, field: str = "VmRSS") -> int:
        """Resident memory from /proc (``VmHWM`` is the peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field} not in /proc/{self.pid}/status")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
