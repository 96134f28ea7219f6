"""update encoding: compressed transport of updates and downloads

Revision ID: 0012
Revises: 0007
Create Date: 2026-12-06 13:00:00.000000

- ``federations.transport``: how updates and downloads travel (``specs.TransportPolicy``,
  ``{"encoding": "float32" | "float16" | "int8"}``); null = float32.
- ``model_versions.encodings``: the version's weights in the federation's compressed
  encoding, ``{"<encoding>": {"sha256": ..., "size": ...}}``, named by its signed
  manifest; null = float32 only (every version recorded before this revision).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0009_participant_sampling"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("federations") as batch:
        batch.add_column(sa.Column("transport", sa.JSON(), nullable=True))
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("encodings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("encodings")
    with op.batch_alter_table("federations") as batch:
        batch.drop_column("transport")
