"""The round read of every poll and every ``…/rounds/current/weights``
(``rounds.current_round``): one Core statement on a Core connection, no ORM session, with
the same answers as before (both backends)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from coordinator.domain import rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import Forbidden, NotFound
from coordinator.store.models import Federation, Round
from coordinator.store.repository import RoundRepository, RoundView
from tests.factories import domain_federation


@pytest.fixture
def sessions_made(monkeypatch: pytest.MonkeyPatch) -> list[Session]:
    """Every ORM session constructed from here on."""
    made: list[Session] = []
    init = Session.__init__

    def counted(self: Session, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Session, "__init__", counted)
    return made


def _stored(ctx: Context, fid: str, number: int) -> RoundView:
    with ctx.read_sessions() as session:
        row = RoundRepository(session).get(fid, number)
        assert row is not None
        return RoundView.of(row)


def test_the_open_round_is_read_without_an_orm_session(
    ctx: Context, sessions_made: list[Session]
) -> None:
    fid, parts = domain_federation(ctx, participants=2, min_participants=2)
    expected = _stored(ctx, fid, 1)
    sessions_made.clear()
    federation, row = rounds.current_round(ctx, parts[0], fid)
    assert sessions_made == []
    assert row == expected
    assert (federation.id, federation.current_round, federation.state) == (fid, 1, "active")


def test_a_federation_without_a_current_round_answers_its_last_round(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=2, min_participants=2)
    with ctx.sessions.begin() as session:
        session.execute(update(Round).where(Round.federation_id == fid).values(state="closed"))
        session.execute(
            update(Federation)
            .where(Federation.id == fid)
            .values(state="completed", current_round=None)
        )
    federation, row = rounds.current_round(ctx, parts[1], fid)
    assert (federation.state, federation.current_round) == ("completed", None)
    assert row == _stored(ctx, fid, 1)
    assert row.state == "closed"


def test_refusals_are_the_same(ctx: Context) -> None:
    fid, _parts = domain_federation(ctx, participants=1, min_participants=1)
    _other, others = domain_federation(ctx, participants=1, min_participants=1)
    with pytest.raises(NotFound):
        rounds.current_round(ctx, Principal(is_admin=True), "no-such-federation")
    with pytest.raises(Forbidden):
        rounds.current_round(ctx, others[0], fid)
