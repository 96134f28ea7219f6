"""secure aggregation: share ciphertexts in a table of their own

Revision ID: 0013_secagg_plus
Revises: 0012
Create Date: 2026-12-06 16:00:00.000000

- ``secagg_share_ciphertexts``: one row per encrypted share message of a round, sender to
  recipient, indexed by (round, recipient): a participant's inbox is one index range. The
  state row (``secagg_states.state``) keeps only who shared (``"sharers"``); its
  ``"shares"`` list stays empty.
- Rounds in flight during the upgrade: their ciphertexts move from the state row into the
  table (and back on downgrade), so the protocol continues across the upgrade.
"""

import base64
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_secagg_plus"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_states = sa.table("secagg_states", sa.column("round_id", sa.String), sa.column("state", sa.Text))
_ciphertexts = sa.table(
    "secagg_share_ciphertexts",
    sa.column("round_id", sa.String),
    sa.column("sender_id", sa.String),
    sa.column("recipient_id", sa.String),
    sa.column("ciphertext", sa.LargeBinary),
)


def upgrade() -> None:
    op.create_table(
        "secagg_share_ciphertexts",
        sa.Column("round_id", sa.String(length=36), nullable=False),
        sa.Column("sender_id", sa.String(length=64), nullable=False),
        sa.Column("recipient_id", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["secagg_states.round_id"],
            name=op.f("fk_secagg_share_ciphertexts_round_id_secagg_states"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "round_id", "sender_id", "recipient_id", name=op.f("pk_secagg_share_ciphertexts")
        ),
    )
    op.create_index(
        "ix_secagg_share_ciphertexts_recipient",
        "secagg_share_ciphertexts",
        ["round_id", "recipient_id"],
    )
    connection = op.get_bind()
    for round_id, text in connection.execute(sa.select(_states.c.round_id, _states.c.state)):
        state = json.loads(text)
        shares = state.get("shares") or []
        rows = [
            {
                "round_id": round_id,
                "sender_id": message["participant"],
                "recipient_id": recipient,
                "ciphertext": base64.b64decode(ciphertext),
            }
            for message in shares
            for recipient, ciphertext in message["ciphertexts"].items()
        ]
        if rows:
            connection.execute(_ciphertexts.insert(), rows)
        state["sharers"] = sorted(message["participant"] for message in shares)
        state["shares"] = []
        connection.execute(
            _states.update()
            .where(_states.c.round_id == round_id)
            .values(state=json.dumps(state, separators=(",", ":")))
        )


def downgrade() -> None:
    connection = op.get_bind()
    for round_id, text in connection.execute(sa.select(_states.c.round_id, _states.c.state)):
        state = json.loads(text)
        rows = connection.execute(
            sa.select(
                _ciphertexts.c.sender_id, _ciphertexts.c.recipient_id, _ciphertexts.c.ciphertext
            ).where(_ciphertexts.c.round_id == round_id)
        )
        by_sender: dict[str, dict[str, str]] = {s: {} for s in state.get("sharers", [])}
        for sender, recipient, ciphertext in rows:
            by_sender.setdefault(sender, {})[recipient] = base64.b64encode(ciphertext).decode()
        state["shares"] = [
            {
                "federation_id": state["federation_id"],
                "round": state["round"],
                "participant": sender,
                "ciphertexts": dict(sorted(ciphertexts.items())),
            }
            for sender, ciphertexts in sorted(by_sender.items())
        ]
        state.pop("sharers", None)
        connection.execute(
            _states.update()
            .where(_states.c.round_id == round_id)
            .values(state=json.dumps(state, separators=(",", ":")))
        )
    op.drop_index("ix_secagg_share_ciphertexts_recipient", table_name="secagg_share_ciphertexts")
    op.drop_table("secagg_share_ciphertexts")
