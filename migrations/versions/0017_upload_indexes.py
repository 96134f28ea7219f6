"""the indexes an upload writes and reads: four dropped, the active count covered

Revision ID: 0017_upload_indexes
Revises: 0016_upload_statements
Create Date: 2026-12-07 16:00:00.000000

Every upload inserts an ``updates`` row and (with its report) upserts an ``evaluations``
row; each index of those tables is one more b-tree page changed, i.e. one more page
written to the write-ahead log (16 KB on SQLite) and copied again by its checkpoint
(bench/RESULTS.md, "crossdev-core"). Three of them repeat the leading column of another
index of the same table, which serves every lookup they served (and the foreign keys'
``ON DELETE CASCADE``):

- ``ix_updates_round_id``: the unique (``round_id``, ``participant_id``) constraint;
- ``ix_updates_participant_id``: ``ix_updates_participant_idempotency_key``
  (``participant_id``, ``idempotency_key``);
- ``ix_evaluations_federation_id``: the unique (``federation_id``, ``version``,
  ``split``, ``participant_id``) constraint.

``ix_audit_events_federation_id`` goes too: every audited transaction (every upload) wrote a
page of it, and no query reads the log by federation (``GET /v1/audit`` and ``fedrec audit
verify`` page by ``seq``, the primary key).

And every upload's guarded count counts the federation's active participants (its
round's cohort when unsampled): ``ix_participants_federation_id`` becomes
``ix_participants_federation_state`` (``federation_id``, ``state``), which that count reads
alone (a covering index) instead of every participant's row; it serves what the former
served.

The downgrade restores the former indexes. Either way the coordinator's code is correct:
only the plans change.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017_upload_indexes"
down_revision: str | None = "0016_upload_statements"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, columns)
_DROPPED = (
    ("ix_updates_round_id", "updates", ["round_id"]),
    ("ix_updates_participant_id", "updates", ["participant_id"]),
    ("ix_evaluations_federation_id", "evaluations", ["federation_id"]),
    ("ix_participants_federation_id", "participants", ["federation_id"]),
    ("ix_audit_events_federation_id", "audit_events", ["federation_id"]),
)
_CREATED = (("ix_participants_federation_state", "participants", ["federation_id", "state"]),)


def upgrade() -> None:
    for name, table, columns in _CREATED:
        op.create_index(name, table, columns, unique=False)
    for name, table, _columns in _DROPPED:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for name, table, columns in _DROPPED:
        op.create_index(name, table, columns, unique=False)
    for name, table, _columns in _CREATED:
        op.drop_index(name, table_name=table)
