"""scripts/provision: installs what a make target needs only when it is missing.

It runs with a fake ``apt-get`` (recording its calls) and a fake ``id`` first on PATH. Hiding
/usr/bin from PATH makes Debian's /usr/bin programs (redis-server, chromium) "missing" while the
daemons in /usr/sbin (nats-server, haproxy) must still count as present.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "provision"


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    """A folder with a recording apt-get, an ``id`` answering $FAKE_UID, and the few programs
    the script itself uses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "apt-get": f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {tmp_path / "apt.log"}\n',
        "id": '#!/bin/sh\necho "$FAKE_UID"\n',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    for program in ("cat", "sort", "tr"):
        found = shutil.which(program)
        assert found is not None
        (bin_dir / program).symlink_to(found)
    return bin_dir


def _provision(target: str, path: str, uid: int) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "FAKE_UID": str(uid), "PYTHON": sys.executable}
    return subprocess.run(
        ["/bin/sh", str(SCRIPT), target], env=env, capture_output=True, text=True, timeout=60
    )


def _apt_calls(fakes: Path) -> list[str]:
    log = fakes.parent / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


def test_not_root_stops_with_one_line_naming_the_apt_get_command(fakes: Path) -> None:
    """As a user, missing packages stop `make test` with one line: the exact apt-get command."""
    result = _provision("test", str(fakes), uid=1000)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    found = re.fullmatch(r"make test needs Debian packages that are missing; as root run: "
                         r"apt-get install -y ([a-z0-9. -]+)", lines[0])  # fmt: skip
    assert found is not None, lines[0]
    packages = found.group(1).split()
    assert {"redis-server", "redis-tools", "chromium"} <= set(packages)
    assert "nats-server" not in packages  # in /usr/sbin, off this PATH, yet present
    assert packages == sorted(packages)
    assert _apt_calls(fakes) == []


def test_root_installs_the_missing_packages_non_interactively(fakes: Path) -> None:
    """As root, apt-get updates once and installs exactly the missing packages, unattended."""
    result = _provision("test", str(fakes), uid=0)
    assert result.returncode == 0, result.stderr
    update, install = _apt_calls(fakes)
    assert update == "noninteractive update -q"
    assert install.startswith("noninteractive install -y -q ")
    assert {"redis-server", "redis-tools", "chromium"} <= set(install.split()[4:])


def test_run_needs_nothing_the_demo_does_not(fakes: Path) -> None:
    """`make run` asks for no server package: with /usr/bin hidden it still needs nothing."""
    result = _provision("run", str(fakes), uid=1000)
    assert (result.returncode, result.stderr, _apt_calls(fakes)) == (0, "", [])


def test_a_complete_machine_makes_no_apt_call(fakes: Path) -> None:
    """With every package present (make test provisioned them), nothing is printed or run."""
    for target in ("run", "test"):
        result = _provision(target, f"{fakes}:{os.environ['PATH']}", uid=0)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), target
    assert _apt_calls(fakes) == []
