"""``gatekeeper serve --workers N``: N processes serving one port, kept alive by a supervisor.

The supervisor binds the listening socket once (a second ``gatekeeper serve`` on the same port
fails with EADDRINUSE, as it should) and forks the workers, which inherit it and accept from it.
Each worker is a whole replica: its own event loop, components, pools and connections; what
must be shared between them is shared the way replicas share it (Redis: limits, the waiting
room, live statistics; the admission worker's leadership is elected through Redis, once per
cluster). So workers need Redis: without ``GATEKEEPER_REDIS_URL``, ``serve`` runs one process
(and refuses an explicit ``--workers`` above 1, naming why).

The supervisor, step by step:

1. bind the socket; switch Prometheus metrics to multiprocess mode (a private directory unless
   ``GATEKEEPER_METRICS_DIR`` names one), so that ``/metrics`` on any worker sums every worker;
2. fork N workers;
3. wait for signals: SIGHUP is passed to every worker (each reloads the file), SIGTERM/SIGINT
   too (each drains within ``listener.shutdown_grace``), after which the supervisor waits for
   them, killing any still alive a few seconds past the grace;
4. a worker that dies otherwise is replaced (its metrics files marked dead), after a back-off
   that grows while workers keep dying young, so a broken start cannot spin the machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Supervisor", "bind_listener", "default_workers", "remove_metrics_dir", "worker_count"]

logger = logging.getLogger("gatekeeper.workers")

_SIGNALS = (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
_YOUNG = 5.0  # a worker dying sooner than this after its start counts towards the back-off


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_count(asked: int | None, *, shared_store: bool) -> int:
    """How many workers to run: ``asked`` (the flag or ``GATEKEEPER_WORKERS``), else one per
    core. Workers share state through Redis only: without it, one (an explicit count above 1
    raises ConfigurationError naming why)."""
    from gatekeeper.errors import ConfigurationError

    if asked is not None and asked < 1:
        raise ConfigurationError(f"--workers must be at least 1, got {asked}")
    if not shared_store:
        if asked is not None and asked > 1:
            raise ConfigurationError(
                f"--workers {asked} needs GATEKEEPER_REDIS_URL: without Redis every process "
                "would keep limits, queues and statistics of its own (run one worker, or set "
                "a Redis URL)"
            )
        return 1
    return asked if asked is not None else default_workers()


def bind_listener(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket the workers share (raises OSError, e.g. EADDRINUSE)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


class Supervisor:
    """Runs ``work(sock)`` in ``count`` forked workers until told to stop (see the module
    docstring). ``work`` is called in the child and returns its exit code."""

    def __init__(
        self,
        work: Callable[[socket.socket], int],
        sock: socket.socket,
        count: int,
        *,
        grace: float,
        metrics_dir: str | None = None,
    ) -> None:
        self.work = work
        self.sock = sock
        self.count = count
        self.grace = grace
        self.metrics_dir = metrics_dir
        self.workers: dict[int, float] = {}  # pid -> when it started
        self._stopping = False
        self._deaths = 0  # consecutive young deaths, for the back-off

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; the exit code (0 when the workers stopped well)."""
        self._prepare_metrics()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for _ in range(self.count):
                self._spawn()
            logger.info("%d workers serving on %s", self.count, self._address())
            while self.workers:
                info = signal.sigtimedwait(_SIGNALS, 1.0)
                if info is None:
                    self._respawn_missing()
                    continue
                if info.si_signo == signal.SIGCHLD:
                    self._reap()
                elif info.si_signo == signal.SIGHUP:
                    logger.info("reloading: SIGHUP passed to %d workers", len(self.workers))
                    self._signal_all(signal.SIGHUP)
                else:
                    return self._stop()
            return 0
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            self.sock.close()

    # -- workers ---------------------------------------------------------------------------
    def _spawn(self) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                _die_with(parent)
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                for signo in _SIGNALS:
                    signal.signal(signo, signal.SIG_DFL)
                code = self.work(self.sock)
            except BaseException:
                logger.exception("worker %d failed", os.getpid())
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.workers[pid] = time.monotonic()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            started = self.workers.pop(pid, None)
            if started is None:
                continue
            self._mark_dead(pid)
            if self._stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            young = time.monotonic() - started < _YOUNG
            self._deaths = self._deaths + 1 if young else 0
            logger.error("worker %d exited (%d); starting another", pid, code)
            if self._deaths > 1:
                time.sleep(min(10.0, 0.5 * 2 ** (self._deaths - 2)))
            self._spawn()

    def _respawn_missing(self) -> None:
        self._reap()  # (a SIGCHLD can coalesce with another: look anyway)
        while not self._stopping and len(self.workers) < self.count:
            self._spawn()

    def _signal_all(self, signo: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signo)

    def _stop(self) -> int:
        """Pass SIGTERM on and wait for the workers to drain (a little past their grace)."""
        self._stopping = True
        logger.info("stopping %d workers", len(self.workers))
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 5.0
        failed = False
        while self.workers and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            if self.workers.pop(pid, None) is not None:
                failed = failed or os.waitstatus_to_exitcode(status) != 0
                self._mark_dead(pid)
        for pid in list(self.workers):
            logger.error("worker %d did not stop within the grace period: killed", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            failed = True
        self.workers.clear()
        return 1 if failed else 0

    # -- metrics ---------------------------------------------------------------------------
    def _prepare_metrics(self) -> None:
        from gatekeeper.observability.metrics import enable_multiprocess

        directory = self.metrics_dir or tempfile.mkdtemp(prefix="gatekeeper-metrics-")
        enable_multiprocess(directory)

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]

    def _address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"


def _die_with(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when the supervisor dies, however it dies
    (a SIGKILLed supervisor must not leave workers serving the port on their own)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def remove_metrics_dir(path: str | None) -> None:
    """Remove a private metrics directory made by :class:`Supervisor` (best effort)."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        for child in Path(path).iterdir():
            child.unlink()
        Path(path).rmdir()
