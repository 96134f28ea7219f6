"""signed model versions: each version's canonical manifest and its Ed25519 signature

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-06 10:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # nullable: versions recorded before signing existed stay unsigned (verify-lineage
    # reports them)
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("manifest", sa.Text(), nullable=True))
        batch.add_column(sa.Column("signature", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("signature")
        batch.drop_column("manifest")
