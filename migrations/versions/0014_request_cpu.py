"""auth generation: a counter that token caches read to learn of revocations

Revision ID: 0014_request_cpu
Revises: 0013_secagg_plus
Create Date: 2026-12-06 16:00:00.000000

- ``auth_generation``: one row (id 1), its ``generation`` bumped in every transaction
  that revokes, re-enrols or re-tokens a participant. Each coordinator process caches
  authenticated tokens for a few seconds and re-reads this counter at most every
  0.5 s; a change empties its cache (docs/security.md, "Token cache").
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_request_cpu"
down_revision: str | None = "0013_secagg_plus"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "auth_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_generation")),
    )
    op.bulk_insert(table, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("auth_generation")
