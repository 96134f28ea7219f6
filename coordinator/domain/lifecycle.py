"""The round lifecycle: states, the one decision of what a round needs next, transitions.

Rounds::

    open ──claim──▶ aggregating ──close──▶ closed
     │  ▲               │
     │  └──release──────┘   (a failed attempt gives the round back; an expired
     │                        lease lets another process claim it again)
     └──fail──▶ failed       (deadline passed below quorum, policy "fail"; or,
                              from aggregating, a result that is not finite)

    (a small round claimed, folded and recorded in one transaction goes open ──▶
    closed, or failed, by one compare-and-set: claim_and_close, the claim and the
    close at once; nothing in between is visible)

Federations::

    active ──stop──▶ evaluating ──complete──▶ completed
       │
       └──fail──▶ failed      (rounds.max_failed_rounds rounds failed)

``stop`` after a round closed when :func:`stopping.stop_reason` says so (round budget
spent, privacy budget, target reached, or no validation gain for ``patience``
versions). ``evaluating`` opens no round: it waits for every active participant's
validation figures of the final version, or ``final_evaluation_seconds``, so the last
version is evaluated and deployable too. ``complete_federation`` is the one way into
``completed``. A federation whose ``rounds.max_failed_rounds``-th round fails is
``failed``: no round opens again, so a short deadline with ``below_quorum: fail`` cannot
add rounds forever.

Every transition is a function that takes the caller's ``Session`` and changes rows in
it, never commits: a use case composes several inside one transaction (closing a round,
recording its version and opening the next commit together). ``claim`` and ``close`` are
compare-and-sets in the database, so across processes exactly one aggregates a round.

Hooks for what comes next, each with today's behaviour as its only implementation:
``ParticipantSelection`` (who takes part in a round: its sampled cohort, see
:mod:`coordinator.domain.sampling`, or every active participant) and
``RoundPhases`` (the steps inside an open round: one, ``collect``; secure aggregation
adds key exchange before it and unmasking after it).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from sqlalchemy.orm import Session

from coordinator.domain import audit, deployment, sampling, secure_rounds
from coordinator.domain.errors import NoUpdates, RoundNotOpen
from coordinator.domain.specs import PrivacyPolicy, RoundPolicy
from coordinator.domain.stopping import stop_reason
from coordinator.store.models import Federation, Round, new_id
from coordinator.store.repository import (
    EvaluationRepository,
    ModelVersionRepository,
    ParticipantRepository,
    RoundCompleteness,
    RoundRepository,
    UpdateRepository,
)
from coordinator.store.round_change import NewRound, RoundChange

__all__ = [
    "PLAINTEXT_PHASES",
    "ROUND_COHORT",
    "FederationState",
    "ParticipantSelection",
    "RoundPhases",
    "RoundState",
    "Step",
    "Trigger",
    "advance",
    "certainly_waits",
    "claim",
    "claim_and_close",
    "close",
    "complete_federation",
    "extend_deadline",
    "fail",
    "fail_aggregation",
    "final_evaluation_settled",
    "next_step",
    "open_round",
    "release",
    "renew_lease",
    "settle_final_evaluation",
    "stop",
]

log = logging.getLogger("fedrec.rounds")


class RoundState(StrEnum):
    OPEN = "open"
    AGGREGATING = "aggregating"
    CLOSED = "closed"
    FAILED = "failed"


class FederationState(StrEnum):
    ACTIVE = "active"
    EVALUATING = "evaluating"  # stopped training; waiting for the final version's figures
    COMPLETED = "completed"
    FAILED = "failed"  # rounds.max_failed_rounds rounds failed; no round opens again


class Trigger(StrEnum):
    """What asks for a round's next step."""

    UPLOAD = "upload"  # an update was accepted: aggregate if the round is now complete
    TIMER = "timer"  # deadlines, expired leases, rounds completed by a revocation
    ADMIN = "admin"  # aggregate now, whatever has arrived


class Step(StrEnum):
    WAIT = "wait"
    AGGREGATE = "aggregate"
    FAIL = "fail"
    EXTEND = "extend"


class ParticipantSelection(Protocol):
    """Who takes part in a round: how many updates complete it, and its quorum."""

    def expected(self, session: Session, round_row: Round) -> int:
        """How many updates complete the round."""

    def quorum(self, session: Session, round_row: Round, min_participants: int) -> int:
        """How many updates a deadline close needs."""


class _Cohort:
    """The round's cohort (:func:`sampling.round_cohort`): its drawn sample's active
    members under ``rounds.sampling``, every active participant otherwise."""

    def expected(self, session: Session, round_row: Round) -> int:
        return sampling.cohort_count(session, round_row)

    def quorum(self, session: Session, round_row: Round, min_participants: int) -> int:  # noqa: ARG002
        return sampling.quorum(round_row, min_participants)


ROUND_COHORT: ParticipantSelection = _Cohort()


class RoundPhases(Protocol):
    """The steps inside an open round (secure aggregation: keys, masked input, unmask)."""

    def phase(self, round_row: Round) -> str:
        """The phase an open round is in."""

    def accepts_updates(self, round_row: Round) -> bool:
        """Whether the round's current phase takes model updates."""


class _PlaintextPhases:
    def phase(self, round_row: Round) -> str:  # noqa: ARG002 - one phase only
        return "collect"

    def accepts_updates(self, round_row: Round) -> bool:
        return round_row.state == RoundState.OPEN


PLAINTEXT_PHASES: RoundPhases = _PlaintextPhases()


def open_round(
    session: Session, federation: Federation, *, number: int, base_version: int, now: datetime
) -> Round:
    """Open round ``number`` on ``base_version`` and make it the federation's current round."""
    policy = RoundPolicy.model_validate(federation.round_policy)
    deadline = _deadline(policy, now)
    round_row = Round(
        federation_id=federation.id,
        number=number,
        state=RoundState.OPEN,
        base_version=base_version,
        update_count=0,
        opened_at=now,
        deadline_at=deadline,
    )
    session.add(round_row)
    federation.current_round = number
    if policy.sampling is not None:
        # drawn once: here, in the transaction that opens the round, or (too few
        # participants yet) by the timer under this round's row lock
        round_row.sampled = True
        sampling.draw_if_due(session, round_row, policy, now)
    return round_row


def _deadline(policy: RoundPolicy, now: datetime) -> datetime | None:
    return now + timedelta(seconds=policy.deadline_seconds) if policy.deadline_seconds else None


def _lease_expired(round_row: Round, now: datetime) -> bool:
    return (
        round_row.state == RoundState.AGGREGATING
        and round_row.lease_expires_at is not None
        and round_row.lease_expires_at < now
    )


def next_step(
    session: Session,
    federation: Federation,
    round_row: Round,
    *,
    trigger: Trigger,
    now: datetime,
    selection: ParticipantSelection = ROUND_COHORT,
    contributing: int | None = None,
    expected: int | None = None,
) -> Step:
    """The one place that decides whether a round aggregates, fails, waits or is extended.

    The admin's call aggregates an open round with at least one update, or raises why not.
    Under secure aggregation the protocol decides (:mod:`secure_rounds`): the round
    aggregates once the survivors' sum is unmasked, and fails if the protocol aborted.
    ``contributing``: the round's updates from active participants, if the caller counted
    them in this transaction under the round's lock (else they are counted here);
    ``expected``: likewise, the cohort's active members (``selection.expected``).
    """
    if PrivacyPolicy.model_validate(federation.privacy).secure_aggregation is not None:
        admin = trigger is Trigger.ADMIN
        if admin and round_row.state != RoundState.OPEN:
            raise RoundNotOpen(
                f"round {round_row.number} is {round_row.state}; only an open round can be "
                "aggregated",
                round=round_row.number,
                state=round_row.state,
            )
        if round_row.state != RoundState.OPEN and not _lease_expired(round_row, now):
            return Step.WAIT
        return Step(secure_rounds.next_step_name(session, round_row, admin=admin))
    if contributing is None:
        contributing = UpdateRepository(session).count_from_active(round_row.id)
    if trigger is Trigger.ADMIN:
        if round_row.state != RoundState.OPEN:
            raise RoundNotOpen(
                f"round {round_row.number} is {round_row.state}; only an open round can be "
                "aggregated",
                round=round_row.number,
                state=round_row.state,
            )
        if not contributing:
            raise NoUpdates(
                f"round {round_row.number} has no update from an active participant yet"
            )
        return Step.AGGREGATE
    if _lease_expired(round_row, now):
        return Step.AGGREGATE if contributing else Step.WAIT
    if round_row.state != RoundState.OPEN:
        return Step.WAIT
    if sampling.draw_pending(round_row):
        return Step.WAIT  # its deadline starts at the draw
    if round_row.cohort_size == 0:
        # under DP an empty draw still releases its noise-only step: skipping it would
        # tell whether the sample was empty, which the accountant does not pay for;
        # without DP there is nothing to release, and the next round draws again
        if PrivacyPolicy.model_validate(federation.privacy).dp is not None:
            return Step.AGGREGATE
        return Step.FAIL
    if expected is None:
        expected = selection.expected(session, round_row)
    if expected > 0 and contributing == expected:
        return Step.AGGREGATE
    if round_row.deadline_at is None or round_row.deadline_at > now:
        return Step.WAIT
    policy = RoundPolicy.model_validate(federation.round_policy)
    if contributing >= max(selection.quorum(session, round_row, policy.min_participants), 1):
        return Step.AGGREGATE
    if policy.below_quorum == "extend" or policy.deadline_seconds is None:
        return Step.EXTEND
    return Step.FAIL


def certainly_waits(round_facts: RoundCompleteness, now: datetime) -> bool:
    """Whether :func:`next_step` would answer WAIT to an upload's kick of a plaintext
    round, decided from one row (:meth:`RoundRepository.completeness`); False: ask
    :func:`next_step`.

    Conservative where it differs: it compares every accepted update (``update_count``)
    with the cohort, where ``next_step`` counts only the active participants' updates;
    those are never more, so fewer updates than the cohort means the round is incomplete.
    """
    if round_facts.state == RoundState.AGGREGATING:
        expires = round_facts.lease_expires_at
        return expires is None or expires >= now  # an expired lease may be taken over
    if round_facts.state != RoundState.OPEN:
        return True
    if round_facts.sampled and round_facts.population is None:
        return True  # the cohort is not drawn yet
    if round_facts.cohort_size == 0:
        return False  # an empty draw releases (DP) or fails the round
    if round_facts.deadline_at is not None and round_facts.deadline_at <= now:
        return False
    return round_facts.update_count < round_facts.cohort_active


def claim(session: Session, round_row: Round, *, owner: str, now: datetime, lease: float) -> bool:
    """``open -> aggregating`` (or take over an expired lease) as a compare-and-set."""
    return RoundRepository(session).claim_for_aggregation(
        round_row.id, owner=owner, now=now, lease_until=now + timedelta(seconds=lease)
    )


def renew_lease(
    session: Session, round_id: str, *, owner: str, now: datetime, lease: float
) -> bool:
    """Extend ``owner``'s lease of an ``aggregating`` round (a long solve keeps it while
    it runs); false if the lease was lost."""
    return RoundRepository(session).renew_lease(
        round_id, owner=owner, lease_until=now + timedelta(seconds=lease)
    )


def release(session: Session, round_id: str, *, owner: str) -> None:
    """``aggregating -> open``: give a claimed round back after a failed attempt."""
    RoundRepository(session).release(round_id, owner=owner)


def close(
    session: Session,
    federation: Federation,
    round_id: str,
    *,
    owner: str,
    result_version: int,
    now: datetime,
) -> bool:
    """``aggregating -> closed`` if ``owner`` still holds the lease; counts the round."""
    if not RoundRepository(session).close_if_owned(
        round_id, owner=owner, result_version=result_version, closed_at=now
    ):
        return False
    federation.completed_rounds += 1
    return True


def claim_and_close(
    session: Session,
    federation: Federation,
    round_id: str,
    *,
    owner: str,
    claimed_at: datetime,
    result_version: int,
    now: datetime,
) -> bool:
    """:func:`claim` and :func:`close` as one compare-and-set, for a round claimed,
    aggregated and recorded inside one transaction (nothing between them is visible):
    ``open`` (or a lease expired at ``claimed_at``) ``-> closed``; counts the round."""
    if not RoundRepository(session).claim_and_close(
        round_id, owner=owner, now=claimed_at, result_version=result_version, closed_at=now
    ):
        return False
    federation.completed_rounds += 1
    return True


def extend_deadline(federation: Federation, round_row: Round, now: datetime) -> None:
    """Below quorum at the deadline, policy "extend": one more deadline period."""
    policy = RoundPolicy.model_validate(federation.round_policy)
    round_row.deadline_at = now + timedelta(seconds=policy.deadline_seconds or 0)
    log.info("round %d of %s below quorum: deadline extended", round_row.number, federation.id)


def fail(
    session: Session,
    federation: Federation,
    round_row: Round,
    now: datetime,
    *,
    reason: str | None = None,
) -> None:
    """``open -> failed`` below quorum at the deadline, or a secure aggregation that
    aborted (``reason``); the next round opens on the same base, unless that was the
    federation's ``max_failed_rounds``-th failed round."""
    policy = RoundPolicy.model_validate(federation.round_policy)
    round_row.state = RoundState.FAILED
    round_row.closed_at = now
    round_row.failure_reason = (
        reason
        or (
            "no participant was drawn into the round's sample (rounds.sampling)"
            if round_row.cohort_size == 0
            else f"deadline passed with {round_row.update_count} updates, "
            f"quorum is {policy.min_participants}"
        )
    )[:500]
    log.info("round %d of %s failed below quorum", round_row.number, federation.id)
    _after_failed_round(session, federation, round_row, now)


def fail_aggregation(
    session: Session,
    federation: Federation,
    round_row: Round,
    *,
    owner: str,
    reason: str,
    now: datetime,
    claimed_at: datetime | None = None,
) -> bool:
    """``aggregating -> failed`` if ``owner`` still holds the lease: the aggregate was
    refused (not finite), so no version is recorded and the next round opens on the same
    base, unless the federation reached ``max_failed_rounds``. ``claimed_at``: the round
    was not claimed yet, in this transaction (:func:`claim_and_close`): claim and fail it
    as one compare-and-set (``open`` or a lease expired then)."""
    rounds = RoundRepository(session)
    if claimed_at is not None:
        failed = rounds.claim_and_fail(
            round_row.id, owner=owner, now=claimed_at, reason=reason[:500], closed_at=now
        )
    else:
        failed = rounds.fail_if_owned(round_row.id, owner=owner, reason=reason[:500], closed_at=now)
    if not failed:
        return False
    session.refresh(round_row)
    log.warning("round %d of %s failed: %s", round_row.number, federation.id, reason)
    _after_failed_round(session, federation, round_row, now)
    return True


def _after_failed_round(
    session: Session, federation: Federation, round_row: Round, now: datetime
) -> None:
    policy = RoundPolicy.model_validate(federation.round_policy)
    audit.record(
        session,
        actor="coordinator",
        action="round-failed",
        federation_id=federation.id,
        subject=f"round {round_row.number}",
        outcome="failed",
        detail={
            "updates": round_row.update_count,
            "quorum": policy.min_participants,
            "reason": (round_row.failure_reason or "")[:200],
        },
        now=now,
    )
    session.flush()
    failed = RoundRepository(session).count_failed(federation.id)
    if failed >= policy.max_failed_rounds:
        federation.state = FederationState.FAILED
        federation.current_round = None
        log.warning(
            "federation %s failed: %d of its rounds failed (rounds.max_failed_rounds)",
            federation.id,
            failed,
        )
        return
    open_round(
        session,
        federation,
        number=round_row.number + 1,
        base_version=round_row.base_version,
        now=now,
    )


def complete_federation(session: Session, federation: Federation, now: datetime) -> None:
    """``evaluating -> completed``, the one way in: the deploy policy picks a version."""
    federation.state = FederationState.COMPLETED
    federation.current_round = None
    deployment.auto_deploy(session, federation, now=now)


def stop(session: Session, federation: Federation, *, reason: str, now: datetime) -> None:
    """``active -> evaluating``: no round is current until the final version is evaluated
    (completes at once when ``final_evaluation_seconds`` is 0)."""
    federation.state = FederationState.EVALUATING
    federation.current_round = None
    # a stop for the privacy budget is the budget refusing another round
    audit.record(
        session,
        actor="coordinator",
        action="budget-refusal" if reason == "privacy_budget" else "stop",
        federation_id=federation.id,
        subject=f"version {federation.latest_version}",
        detail={"reason": str(reason), "completed_rounds": federation.completed_rounds},
        now=now,
    )
    log.info(
        "federation %s stopped (%s) at version %d; evaluating it",
        federation.id,
        reason,
        federation.latest_version,
    )
    settle_final_evaluation(session, federation, now)


def final_evaluation_settled(session: Session, federation: Federation, now: datetime) -> bool:
    """Every active participant reported the final version on validation, or time is up."""
    policy = RoundPolicy.model_validate(federation.round_policy)
    final = ModelVersionRepository(session).get(federation.id, federation.latest_version)
    # the final version is recorded in the transaction that stops the federation
    started = final.created_at if final is not None else now
    if now >= started + timedelta(seconds=policy.final_evaluation_seconds):
        return True
    reported = EvaluationRepository(session).reporters(
        federation.id, federation.latest_version, "validation"
    )
    return ParticipantRepository(session).active_ids(federation.id) <= reported


def settle_final_evaluation(session: Session, federation: Federation, now: datetime) -> bool:
    """Complete an ``evaluating`` federation whose final evaluation is settled.

    The caller holds the federation's row lock, so exactly one transaction completes it.
    """
    if federation.state != FederationState.EVALUATING:
        return False
    if not final_evaluation_settled(session, federation, now):
        return False
    complete_federation(session, federation, now)
    return True


def advance(
    session: Session, federation: Federation, *, closed_round: int, now: datetime
) -> RoundChange | None:
    """After a round closed (counted, its version recorded): open the next round, or
    stop training (see :func:`stopping.stop_reason`) and evaluate the final version.

    An unsampled next round is not added to the session: it comes back, with the
    federation's round counters, as a :class:`RoundChange` of plain values for the
    caller to write (``store.round_change.write_round_change``). None: training stopped,
    or a sampled round (whose draw needs its row) was opened in the session; the unit of
    work writes those."""
    reason = stop_reason(session, federation)
    if reason is not None:
        stop(session, federation, reason=reason, now=now)
        return None
    policy = RoundPolicy.model_validate(federation.round_policy)
    number = closed_round + 1
    if policy.sampling is not None:
        open_round(
            session, federation, number=number, base_version=federation.latest_version, now=now
        )
        return None
    federation.current_round = number
    return RoundChange(
        federation_id=federation.id,
        completed_rounds=federation.completed_rounds,
        latest_version=federation.latest_version,
        current_round=number,
        opened=NewRound(
            id=new_id(),
            federation_id=federation.id,
            number=number,
            base_version=federation.latest_version,
            opened_at=now,
            deadline_at=_deadline(policy, now),
        ),
    )
