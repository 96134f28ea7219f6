"""back-off of diverging federations: step scale and restored version per model version

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 08:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("step_scale", sa.Float(), server_default="1", nullable=False))
        batch.add_column(sa.Column("restored_from", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("restored_from")
        batch.drop_column("step_scale")
