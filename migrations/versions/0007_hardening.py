"""hardening: no token at rest in idempotency records, 64-bit num_examples, limits, expiry

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 10:10:00.000000

- Idempotency records that stored an enrolment's response (a participant's bearer token)
  are deleted: such responses are no longer stored (see coordinator.domain.idempotency).
- ``idempotency_records.created_at`` is indexed: the worker sweeps expired records by it.
- ``updates.num_examples`` becomes 64-bit (PostgreSQL's INTEGER is 32-bit).
- ``federations.limits``: the bounds on what participants report (null = the defaults).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a stored enrolment or re-enrolment response holds the participant's token in clear
    op.execute(
        "DELETE FROM idempotency_records WHERE response_body LIKE '%\"token\"%' "
        "OR path LIKE '%/participants' OR path LIKE '%/reenrol'"
    )
    op.create_index(
        op.f("ix_idempotency_records_created_at"), "idempotency_records", ["created_at"]
    )
    with op.batch_alter_table("updates") as batch:
        batch.alter_column(
            "num_examples", existing_type=sa.Integer(), type_=sa.BigInteger(), nullable=False
        )
    with op.batch_alter_table("federations") as batch:
        batch.add_column(sa.Column("limits", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("federations") as batch:
        batch.drop_column("limits")
    with op.batch_alter_table("updates") as batch:
        batch.alter_column(
            "num_examples", existing_type=sa.BigInteger(), type_=sa.Integer(), nullable=False
        )
    op.drop_index(op.f("ix_idempotency_records_created_at"), table_name="idempotency_records")
