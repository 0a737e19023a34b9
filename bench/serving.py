"""Servers under load, measured honestly: processes, wrk, CPU per request, rounds and medians.

A :class:`Contender` is one server as its users run it (a process, or a supervisor and its
workers). :func:`measure` runs ``wrk`` against it and reads the CPU time every process of the
contender spent meanwhile (from /proc: user + system, children included), the figure least
disturbed by whatever else the shared machine runs. :func:`rounds` alternates contenders over
several rounds (the order rotates each round) and :func:`median` summarises them.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Contender", "Procs", "measure", "median", "rounds", "wrk"]

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def wrk(
    url: str, connections: int, seconds: float, headers: Sequence[str] = ()
) -> dict[str, float]:
    """Run wrk once (``headers``: ``"Name: value"`` lines sent with every request); returns
    req/s, p50 and p99 in milliseconds, requests and errors."""
    fields = [arg for header in headers for arg in ("-H", header)]
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency", *fields, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    errors = 0.0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += float(non2xx[1])
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(float(x) for x in sock.groups())
    requests = float(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "requests": requests}


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out = [pid]
    at = 0
    while at < len(out):
        path = Path(f"/proc/{out[at]}/task/{out[at]}/children")
        try:
            out += [int(child) for child in path.read_text().split()]
        except OSError:
            pass
        at += 1
    return out


def _cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime of the process itself
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Contender:
    """A server to measure: its name, the URL wrk loads, and the process whose tree serves."""

    name: str
    url: str
    pid: int
    headers: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def processes(self) -> list[int]:
        return _tree(self.pid)


def measure(contender: Contender, connections: int, seconds: float) -> dict[str, float]:
    """wrk against ``contender``, plus the CPU time its processes spent per request."""
    pids = contender.processes()
    before = _cpu_seconds(pids)
    result = wrk(contender.url, connections, seconds, contender.headers)
    result["cpu_us"] = (_cpu_seconds(pids) - before) / max(result["requests"], 1) * 1e6
    result["processes"] = float(len(pids))
    return result


def rounds(
    contenders: Sequence[Contender],
    count: int,
    run: Callable[[Contender], dict[str, float]],
) -> dict[str, list[dict[str, float]]]:
    """``run`` each contender once per round, ``count`` rounds, the order rotating each round
    (so that no contender always goes first, or right after the same neighbour)."""
    results: dict[str, list[dict[str, float]]] = {c.name: [] for c in contenders}
    for r in range(count):
        shift = r % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            results[contender.name].append(run(contender))
    return results


def median(samples: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over ``samples``."""
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


class Procs:
    """Processes a benchmark started (each in a session of its own), stopped at the end."""

    def __init__(self, log: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_path = log
        self.log = log.open("ab")

    def start(
        self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=env,
            start_new_session=True,
            cwd=cwd or self.log_path.parent,
        )
        self.procs.append(proc)
        return proc

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.log.close()
