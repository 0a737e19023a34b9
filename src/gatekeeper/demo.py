"""``gatekeeper demo``: everything on one machine with embedded defaults."""

from __future__ import annotations

__all__ = ["run_demo"]


def run_demo(host: str = "127.0.0.1", port: int = 8080) -> int:
    """Run the demo until interrupted; returns the process exit code."""
    raise NotImplementedError("the demo is assembled by the gateway (issue 4)")
