"""server optimizer state per model version; upload lookup by Idempotency-Key

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("server_state_sha256", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_updates_participant_idempotency_key",
        "updates",
        ["participant_id", "idempotency_key"],
    )


def downgrade() -> None:
    op.drop_index("ix_updates_participant_idempotency_key", table_name="updates")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("server_state_sha256")
