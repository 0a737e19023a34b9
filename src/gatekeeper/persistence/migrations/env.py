"""Alembic environment shipped inside the package.

Gatekeeper runs migrations programmatically (``gatekeeper migrate``, see
``gatekeeper.persistence.migrate``): the caller opens an async connection and hands its sync
facade to Alembic through ``config.attributes["connection"]``, so there is no ``alembic.ini``
and no second engine.
"""

from __future__ import annotations

from alembic import context

from gatekeeper.persistence.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable through the alembic CLI
    raise RuntimeError("run migrations with `gatekeeper migrate`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
