"""Run the benchmarks: ``python -m bench [name ...]`` (``make bench BENCH_ARGS=engine``).

Every benchmark is a module ``bench/<name>.py`` exposing ``run(quick: bool) -> Report``. The
runner prints each report as a table and writes it as JSON to ``bench/results/<name>.json``.
Because this machine is shared and noisy, every benchmark measures its baseline in the same run
and reports ratios, not just absolute numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

from bench.net import ensure_redis
from bench.report import Report

BENCHMARKS = [
    "engine",
    "gateway",
    "ab",
    "route_options",
    "waitingroom",
    "cache",
    "identity",
    "observability",
    "geo",
    "cluster",
    "events",
    "abuse",
    "envoy",
]
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {BENCHMARKS})"
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for smoke testing")
    args = parser.parse_args(argv)
    names = args.names or BENCHMARKS
    RESULTS.mkdir(exist_ok=True)
    stop_redis = ensure_redis()  # before the benchmarks read GATEKEEPER_BENCH_REDIS_URL
    try:
        failed = _run(names, args.quick)
    finally:
        if stop_redis is not None:
            stop_redis()
    return 1 if failed else 0


def _run(names: list[str], quick: bool) -> int:
    failed = 0
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            print(f"[{name}] not available yet, skipped")
            continue
        started = time.time()
        report: Report = module.run(quick=quick)
        report.meta.update(
            {"started": started, "seconds": round(time.time() - started, 1),
             "python": platform.python_version(), "quick": quick}
        )  # fmt: skip
        print(report.render())
        (RESULTS / f"{name}.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        failed += not report.targets_met
    return failed


if __name__ == "__main__":
    sys.exit(main())
