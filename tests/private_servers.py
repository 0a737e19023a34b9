"""Private PostgreSQL, RabbitMQ and NATS servers: started on free ports in a temporary folder,
stopped and removed afterwards. ``tests.services`` starts them when the configured services do
not answer; the binaries are Debian's, which ``make test`` installs (``scripts/provision``)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.probes import amqp_answers, nats_answers
from tests.servers import free_port, tool, wait_for_port

__all__ = ["NatsServer", "PostgresServer", "RabbitMQServer"]


def _wait(ready: Callable[[], bool], process: subprocess.Popen[bytes] | None, what: str,
          log: Path, timeout: float) -> None:  # fmt: skip
    """Poll ``ready`` until it holds; fail with the server's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        if ready():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"the private {what} did not start within {timeout:.0f} s:\n{tail}")


def _end(process: subprocess.Popen[bytes] | None, grace: float = 30.0) -> None:
    """Ask ``process`` (leader of its own session) to stop; kill its whole group after ``grace``."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children it left behind, or itself
    except ProcessLookupError:
        pass
    process.wait()


class PostgresServer:
    """A throw-away cluster: ``initdb`` (trust, user postgres) then ``pg_ctl start``, listening on
    127.0.0.1 and a socket in its own folder. PostgreSQL refuses to run as root, so under root
    the server runs as the ``postgres`` user Debian's package creates (else ``nobody``)."""

    def __init__(self) -> None:
        # Debian keeps the server binaries off PATH, in one folder per major version.
        found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
        newest = max(found, key=lambda path: float(Path(path).parts[-3]), default=None)
        initdb = shutil.which("initdb") or newest or tool("initdb")
        self.bindir = Path(initdb).resolve().parent
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="gk-postgres-"))
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], cwd=self.dir, capture_output=True,
            timeout=180, user=self.user, extra_groups=None if self.user is None else [],
        )  # fmt: skip
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            raise RuntimeError(f"private PostgreSQL: {args[0]} failed:\n{output}")

    def start(self) -> None:
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")  # fmt: skip
        # A port can be taken between choosing and binding it (the machine is shared): retry.
        for attempt in range(3):
            self.port = free_port()
            # Durability is not wanted from a throw-away cluster; speed is.
            options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 " + (
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / "server.log"), "-w",
                          "-t", "120", "-o", options, "start")  # fmt: skip
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class RabbitMQServer:
    """A RabbitMQ node of its own: node name, AMQP, distribution and epmd ports, and its
    database, logs, cookie and (empty) plugin list in a temporary folder, so it neither meets
    nor disturbs a broker already running here."""

    def __init__(self) -> None:
        # Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user and logs to /var/log;
        # the script it wraps runs a node as whoever we are, configured by the environment.
        found = glob.glob("/usr/lib/rabbitmq/bin/rabbitmq-server")
        self.script = found[0] if found else tool("rabbitmq-server")
        self.epmd_binary = tool("epmd")
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="gk-rabbitmq-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 180.0) -> None:
        self.port, epmd_port = free_port(), free_port()
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        env = {
            **os.environ,
            "HOME": str(self.dir),  # the Erlang cookie
            "ERL_EPMD_PORT": str(epmd_port),
            "RABBITMQ_NODENAME": f"gk-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
        }
        (self.dir / "rabbitmq.conf").write_text("disk_free_limit.absolute = 1MB\n")
        log = self.dir / "console.log"
        with log.open("wb") as out:
            self.epmd = subprocess.Popen(
                [self.epmd_binary, "-port", str(epmd_port), "-address", "127.0.0.1"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            wait_for_port(epmd_port)
            self.process = subprocess.Popen(
                [self.script], cwd=self.dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        url = self.url
        _wait(lambda: amqp_answers(url) is None, self.process, "RabbitMQ", log, timeout)

    def stop(self) -> None:
        _end(self.process)
        _end(self.epmd, grace=5.0)
        shutil.rmtree(self.dir, ignore_errors=True)


class NatsServer:
    """``nats-server -js`` on a free port with its JetStream store in a temporary folder."""

    def __init__(self) -> None:
        self.binary = tool("nats-server")
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="gk-nats-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.port = free_port()
        log = self.dir / "server.log"
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js",
                "-sd", str(self.dir / "store"), "-l", str(log)]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = self.url
        _wait(lambda: nats_answers(url) is None, self.process, "NATS", log, timeout)

    def stop(self) -> None:
        _end(self.process, grace=10.0)
        shutil.rmtree(self.dir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
