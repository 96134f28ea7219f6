"""secure aggregation: one durable state row per round that runs the protocol

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 13:00:00.000000

- ``secagg_states``: a round's ``SecAggRound.to_dict()`` as JSON text (without the masked
  inputs), its phase and the phase's deadline, rewritten after every change under the
  round's row lock.
- ``secagg_masked_inputs``: each participant's masked input, one row each.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secagg_states",
        sa.Column("round_id", sa.String(length=36), nullable=False),
        sa.Column("federation_id", sa.String(length=36), nullable=False),
        sa.Column("round_number", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=20), nullable=False),
        sa.Column("phase_deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_secagg_states_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["federation_id"],
            ["federations.id"],
            name=op.f("fk_secagg_states_federation_id_federations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("round_id", name=op.f("pk_secagg_states")),
    )
    op.create_index(op.f("ix_secagg_states_federation_id"), "secagg_states", ["federation_id"])
    op.create_table(
        "secagg_masked_inputs",
        sa.Column("round_id", sa.String(length=36), nullable=False),
        sa.Column("participant_id", sa.String(length=64), nullable=False),
        sa.Column("words", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["secagg_states.round_id"],
            name=op.f("fk_secagg_masked_inputs_round_id_secagg_states"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("round_id", "participant_id", name=op.f("pk_secagg_masked_inputs")),
    )


def downgrade() -> None:
    op.drop_table("secagg_masked_inputs")
    op.drop_index(op.f("ix_secagg_states_federation_id"), table_name="secagg_states")
    op.drop_table("secagg_states")
