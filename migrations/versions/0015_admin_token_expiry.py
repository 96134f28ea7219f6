"""admin tokens: each one a row with a lifetime and a revocation

Revision ID: 0015_admin_token_expiry
Revises: 0014_request_cpu
Create Date: 2026-12-06 22:30:00.000000

- ``admin_tokens``: the keyed hash (HMAC-SHA256 under the token-hash key) of every admin
  token, its name, kind (``bootstrap``: FEDREC_ADMIN_TOKEN or data_dir/admin_token,
  registered at the coordinator's first start with it; ``issued``: POST
  /v1/admin/tokens), creation, expiry and revocation. Empty after the upgrade: the next
  start registers the bootstrap token with FEDREC_ADMIN_TOKEN_TTL_SECONDS of life
  (docs/security.md, "Admin tokens").
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_admin_token_expiry"
down_revision: str | None = "0014_request_cpu"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_admin_tokens_token_hash")),
    )


def downgrade() -> None:
    op.drop_table("admin_tokens")
