"""signed model versions (manifest and Ed25519 signature), the audit log, expiring and
rotating participant tokens

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-06 10:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # nullable: versions recorded before signing existed stay unsigned (verify-lineage
    # reports them)
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("manifest", sa.Text(), nullable=True))
        batch.add_column(sa.Column("signature", sa.String(length=100), nullable=True))
    with op.batch_alter_table("participants") as batch:
        batch.add_column(sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("previous_token_hash", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("previous_token_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.create_index(
            op.f("ix_participants_previous_token_hash"), ["previous_token_hash"], unique=False
        )
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("federation_id", sa.String(length=36), nullable=True),
        sa.Column("subject", sa.String(length=100), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_events")),
    )
    op.create_index(
        op.f("ix_audit_events_federation_id"), "audit_events", ["federation_id"], unique=False
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    # the one head row exists from the start: appends only lock and move it
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": "00" * 32}])


def downgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        batch.drop_index(op.f("ix_participants_previous_token_hash"))
        batch.drop_column("previous_token_expires_at")
        batch.drop_column("previous_token_hash")
        batch.drop_column("token_expires_at")
    op.drop_table("audit_head")
    op.drop_index(op.f("ix_audit_events_federation_id"), table_name="audit_events")
    op.drop_table("audit_events")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("signature")
        batch.drop_column("manifest")
