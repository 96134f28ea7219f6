"""small blobs in their index row; the audit head moved by the event's insert

Revision ID: 0016_upload_statements
Revises: 0015_admin_token_expiry
Create Date: 2026-12-07 10:00:00.000000

Fewer statements in every upload's write transaction (bench/RESULTS.md, "upload-txn"):

- ``blobs.data`` (nullable): the bytes of a blob that fits one chunk, written by the
  same INSERT that registers the blob (one statement instead of two). Larger blobs keep
  their ``blob_chunks`` rows; a row of the ``s3`` store keeps no bytes. Existing
  one-chunk blobs move into their row (their chunk deleted); the downgrade moves them
  back. PostgreSQL stores the column uncompressed (``STORAGE EXTERNAL``), as the chunks.
- A trigger ``audit_events_move_head`` (AFTER INSERT ON audit_events, each row) sets the
  ``audit_head`` row to the new event's ``seq`` and ``hash``: an append is the event's
  INSERT alone (the coordinator's conditional insert checks the head it chained to in
  the same statement), not a head read, an insert and a head update. The downgrade
  drops the trigger (the code of 0015 moves the head itself).

Upgrade with every coordinator process stopped, as for any migration: the code before this
revision writes correctly on the upgraded schema (a row without bytes and a chunk, which the
new code reads; a head update that writes what the trigger wrote) but does not read the
bytes that the new code keeps in ``blobs.data``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_upload_statements"
down_revision: str | None = "0015_admin_token_expiry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_TRIGGER = (
    "CREATE TRIGGER audit_events_move_head AFTER INSERT ON audit_events FOR EACH ROW "
    "BEGIN UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1; END"
)
_POSTGRES_FUNCTION = (
    "CREATE FUNCTION audit_events_move_head() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1; "
    "RETURN NULL; END $$"
)
_POSTGRES_TRIGGER = (
    "CREATE TRIGGER audit_events_move_head AFTER INSERT ON audit_events FOR EACH ROW "
    "EXECUTE FUNCTION audit_events_move_head()"
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("blobs", sa.Column("data", sa.LargeBinary(), nullable=True))
    if postgres:
        op.execute("ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL")
    # a blob of exactly one chunk: its bytes into its row, the chunk deleted
    op.execute(
        "UPDATE blobs SET data = (SELECT c.data FROM blob_chunks AS c"
        " WHERE c.digest = blobs.digest AND c.seq = 0)"
        " WHERE (SELECT count(*) FROM blob_chunks AS c WHERE c.digest = blobs.digest) = 1"
    )
    op.execute(
        "DELETE FROM blob_chunks WHERE digest IN (SELECT digest FROM blobs WHERE data IS NOT NULL)"
    )
    if postgres:
        op.execute(_POSTGRES_FUNCTION)
        op.execute(_POSTGRES_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP TRIGGER audit_events_move_head" + (" ON audit_events" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION audit_events_move_head()")
    # every blob with bytes in its row gets them back as its one chunk (an empty blob had
    # no chunk)
    op.execute(
        "INSERT INTO blob_chunks (digest, seq, data) SELECT digest, 0, data FROM blobs"
        " WHERE data IS NOT NULL AND length(data) > 0"
    )
    # SQLite >= 3.35 drops a column in place (a batch copy of ``blobs`` would cascade the
    # chunks' foreign key)
    op.drop_column("blobs", "data")
