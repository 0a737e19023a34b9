"""Initial schema: tenants, tiers (with the four default tiers), users, API keys, refresh
tokens, IP rules, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gatekeeper.persistence.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The seeds' tiers: requests per minute.
DEFAULT_TIERS = [("free", 5, 0), ("basic", 20, 10), ("premium", 100, 20), ("enterprise", 1000, 30)]


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("business_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("admission_limit", sa.Integer(), nullable=False, server_default="10"),
        sa.Column("admission_frequency", sa.Integer(), nullable=False, server_default="5"),
        sa.Column("jwt_expiry_seconds", sa.Integer(), nullable=False, server_default="120"),
        sa.Column("ready_ttl_seconds", sa.Integer(), nullable=False, server_default="300"),
        sa.Column("ip_enqueue_limit", sa.Integer(), nullable=False, server_default="100"),
        sa.Column("ip_enqueue_limit_interval", sa.Integer(), nullable=False, server_default="60"),
        sa.Column("ip_status_polling_limit", sa.Integer(), nullable=False, server_default="60"),
        sa.Column(
            "ip_status_polling_limit_interval", sa.Integer(), nullable=False, server_default="60"
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("business_id", name="pk_tenants"),
    )
    tiers = op.create_table(
        "tiers",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("description", sa.String(200), nullable=False, server_default=""),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("policies", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("name", name="pk_tiers"),
    )
    op.bulk_insert(
        tiers,
        [
            {
                "name": name,
                "description": f"{per_minute} requests per minute",
                "priority": priority,
                # Sliding log: exactly N in any minute, which is what "N per minute" promises.
                "policies": [
                    {
                        "name": f"tier-{name}",
                        "rate": f"{per_minute}/minute",
                        "algorithm": "sliding_log",
                    }
                ],
            }
            for name, per_minute, priority in DEFAULT_TIERS
        ],
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="user"),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.ForeignKeyConstraint(
            ["tier"], ["tiers.name"], name="fk_users_tier_tiers", onupdate="CASCADE"
        ),
    )
    op.create_index("ix_users_tier", "users", ["tier"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False, server_default=""),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("blocked", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("replaced_by", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_keys_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("jti", sa.String(32), nullable=False),
        sa.Column("family_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("jti", name="pk_refresh_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_refresh_tokens_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_refresh_tokens_family", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])
    op.create_table(
        "ip_rules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cidr", sa.String(64), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("note", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ip_rules"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False, server_default=""),
        sa.Column("ip", sa.String(64), nullable=False, server_default=""),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("ip_rules")
    op.drop_index("ix_refresh_tokens_user_id", table_name="refresh_tokens")
    op.drop_index("ix_refresh_tokens_family", table_name="refresh_tokens")
    op.drop_table("refresh_tokens")
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index("ix_users_tier", table_name="users")
    op.drop_table("users")
    op.drop_table("tiers")
    op.drop_table("tenants")
