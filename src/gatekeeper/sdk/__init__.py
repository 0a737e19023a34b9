"""The decision service's clients: the browser SDK (``/sdk.js``) and a Python client."""

from __future__ import annotations

from gatekeeper.sdk.client import CheckResult, DecisionClient

__all__ = ["CheckResult", "DecisionClient"]
