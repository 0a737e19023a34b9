"""Tenant secret keys: what a tenant's backend sends as ``business_id`` (stored hashed).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gatekeeper.persistence.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("business_id", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(8), nullable=False, server_default="admin"),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("replaced_by", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tenant_keys"),
        sa.UniqueConstraint("prefix", name="uq_tenant_keys_prefix"),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["tenants.business_id"],
            name="fk_tenant_keys_business_id_tenants",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
    )
    op.create_index("ix_tenant_keys_business_id", "tenant_keys", ["business_id"])


def downgrade() -> None:
    op.drop_index("ix_tenant_keys_business_id", table_name="tenant_keys")
    op.drop_table("tenant_keys")
