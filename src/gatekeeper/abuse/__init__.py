"""Abuse detection: the patterns operators ask about, counted exactly across replicas.

Credential stuffing (failed logins per address and per account), scanning (401/404 answers
across many paths from one address), clients ignoring ``Retry-After`` (429 storms), many API
keys from one address, one key from many networks. The gateway's accounting and the identity's
login queue observations; a background task counts them in batches on the limiter's store and
flags what reaches its threshold (event ``abuse.detected``, optional progressive ban, a bounded
list of flagged clients for the admin API and the dashboard). See ``docs/abuse.md``.
"""

from __future__ import annotations

from gatekeeper.abuse.detector import Detector
from gatekeeper.abuse.patterns import PATTERNS, Finding, Rule

__all__ = ["PATTERNS", "Detector", "Finding", "Rule"]
