"""participant sampling: each sampled round's cohort, and the privacy spent per version

Revision ID: 0009_participant_sampling
Revises: 0007
Create Date: 2026-12-06 13:00:00.000000

- ``round_cohorts``: who was drawn into which sampled round (written once, in the
  transaction that opens the round).
- ``rounds.sampled``; ``rounds.cohort_size`` / ``rounds.population``: how many were drawn
  out of how many active participants (null until the draw; an unsampled round's cohort
  is every active participant).
- ``model_versions.privacy_spent``: the (epsilon, delta) spent up to the version, computed
  once when the version is recorded (null without DP, and for versions recorded before
  this revision, whose figure the coordinator recomputes).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_participant_sampling"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(
            sa.Column("sampled", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("cohort_size", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("population", sa.Integer(), nullable=True))
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("privacy_spent", sa.JSON(), nullable=True))
    op.create_table(
        "round_cohorts",
        sa.Column("round_id", sa.String(length=36), nullable=False),
        sa.Column("participant_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_round_cohorts_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_round_cohorts_participant_id_participants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("round_id", "participant_id", name=op.f("pk_round_cohorts")),
    )
    op.create_index(op.f("ix_round_cohorts_participant_id"), "round_cohorts", ["participant_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_round_cohorts_participant_id"), table_name="round_cohorts")
    op.drop_table("round_cohorts")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("privacy_spent")
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("population")
        batch.drop_column("cohort_size")
        batch.drop_column("sampled")
