"""Where events go: webhooks, email, a broker (RabbitMQ or NATS JetStream).

Every sink implements :class:`~gatekeeper.events.sinks.base.Sink`: it plans the deliveries a
batch of events needs (one per event and target) and sends a list of them, answering an error
or ``None`` for each. Retries, backoff and dead letters are the delivery loop's, not theirs.
"""

from __future__ import annotations

from gatekeeper.events.sinks.base import Attempt, Sink

__all__ = ["Attempt", "Sink"]
