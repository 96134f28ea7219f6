"""A round's close as plain values, written by prebuilt Core statements.

Recording a round changes the locked federation's round counters (``completed_rounds``,
``latest_version``, ``current_round``) and, unless training stopped, opens the next
round. The domain (``lifecycle.advance``) hands these over as a :class:`RoundChange` of
plain values; :func:`write_round_change` writes them by one UPDATE and one INSERT (the
unit of work's flush of the same change took ~0.6 ms of a small round's ~6 ms of CPU,
bench/RESULTS.md, round-job-core). No ``Round`` object is built for the new round, and
the locked federation, whose counters the domain changed in memory and which are now
written, leaves the session, so the COMMIT's flush finds nothing to write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, inspect, update
from sqlalchemy.orm import Session

from coordinator.store.models import Federation, Round
from coordinator.store.prebuilt import Prebuilt

__all__ = ["COUNTERS", "NewRound", "RoundChange", "write_round_change"]

# the federation's columns a round's close changes
COUNTERS = ("completed_rounds", "latest_version", "current_round")


@dataclass(frozen=True)
class NewRound:
    """The row of a round to open, unsampled (a sampled round's draw needs its ``Round``
    in the session); the other columns take their defaults, as in the flush."""

    id: str
    federation_id: str
    number: int
    base_version: int
    opened_at: datetime
    deadline_at: datetime | None


@dataclass(frozen=True)
class RoundChange:
    """The federation's round counters after a round closed, and the round it opens."""

    federation_id: str
    completed_rounds: int
    latest_version: int
    current_round: int | None
    opened: NewRound | None


def write_round_change(session: Session, federation: Federation, change: RoundChange) -> None:
    """Write ``change`` in the session's transaction (which holds the federation's lock);
    ``federation``, the loaded row it changes, then leaves the session unless another of
    its columns changed too (which the flush then writes, with the counters again)."""
    assert change.federation_id == federation.id
    connection = session.connection()
    _UPDATE_COUNTERS.execute(
        connection,
        {
            "b_federation_id": change.federation_id,
            "completed_rounds": change.completed_rounds,
            "latest_version": change.latest_version,
            "current_round": change.current_round,
        },
    )
    if change.opened is not None:
        opened = change.opened
        _INSERT_ROUND.execute(
            connection,
            {
                "id": opened.id,
                "federation_id": opened.federation_id,
                "number": opened.number,
                "state": "open",
                "base_version": opened.base_version,
                "update_count": 0,
                "opened_at": opened.opened_at,
                "deadline_at": opened.deadline_at,
                "sampled": False,
            },
        )
    # the loaded federation's changes are what was just written: it leaves the session,
    # so the COMMIT finds nothing to flush (a change of any other column stays for it)
    if set(inspect(federation).committed_state) <= set(COUNTERS):
        session.expunge(federation)


_FEDERATIONS = cast(Table, Federation.__table__)
_UPDATE_COUNTERS = Prebuilt(
    update(_FEDERATIONS)
    .where(_FEDERATIONS.c.id == bindparam("b_federation_id"))
    .values(
        completed_rounds=bindparam("completed_rounds"),
        latest_version=bindparam("latest_version"),
        current_round=bindparam("current_round"),
    )
)
_NEW_ROUND_COLUMNS = (
    *(field for field in NewRound.__dataclass_fields__),
    "state",
    "update_count",
    "sampled",
)
# the other columns take their defaults, as in the flush: the server's, none in Python
_INSERT_ROUND = Prebuilt(insert(cast(Table, Round.__table__)), column_keys=_NEW_ROUND_COLUMNS)
