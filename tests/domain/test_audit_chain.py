"""The audit chain's bytes: events appended by ``audit.record`` (plain values since
branch roundjob, an ORM ``AuditEvent`` before) carry the very hashes the earlier code
wrote, and verify."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from coordinator.domain import audit
from coordinator.domain.context import Context
from coordinator.store.models import AuditEvent

# written by the code before this change (main 94fb32a) for the three events below, on a
# fresh database, under the key below
PINNED = [
    (1, "91802ee28bee2273be5d839c86f9b3a6d4481490935b00d92f9169526f822cd4"),
    (2, "0456789b947e80347a0feef047befa88378610a935b6386d015f75472230c7a8"),
    (3, "3b39e8be001174231ebb54ef368e6cfc2de0c3486457a0f98cb82736f1d78e55"),
]


def test_appended_events_carry_the_hashes_the_earlier_code_wrote(ctx: Context) -> None:
    now = datetime(2026, 12, 7, 22, 0, 0, 123456, tzinfo=UTC)
    details = (
        {"version": 3, "sha256": "ab" * 32, "updates": 2, "step_scale": 1.0},
        None,
        {"problem": "x"},
    )
    for n, detail in enumerate(details):
        with ctx.sessions.begin() as session:
            session.info[audit.AUDIT_KEY_INFO] = b"a fixed audit key for the test!!"
            audit.record(
                session,
                actor="coordinator" if n != 1 else "p" * 90,  # cut to 80 characters
                action="aggregate",
                federation_id="f" * 36 if n != 1 else None,
                subject=f"round {n}",
                detail=detail,
                now=now,
                outcome="ok" if n != 2 else "refused",
            )
    with ctx.read_sessions() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
    assert [(event.seq, event.hash) for event in events] == PINNED
    assert events[1].actor == "p" * 80
    assert events[1].detail == {}
    assert [event.prev_hash for event in events[1:]] == [event.hash for event in events[:-1]]
