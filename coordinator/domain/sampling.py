"""Client sampling: who takes part in a round, drawn once when the round opens.

``rounds.sampling`` (:class:`~coordinator.domain.specs.SamplingPolicy`) draws a cohort from
the federation's active participants in the transaction that opens the round, so the draw
happens exactly once however many coordinator processes share the database, and is
recorded (``round_cohorts``, ``rounds.cohort_size``/``population``) before any participant
can see the round: a restart reads the same cohort back, never redraws.

The draw uses the operating system's CSPRNG (:class:`secrets.SystemRandom`), never a
seeded generator: participants cannot predict who will be sampled, which the DP
accountant's amplification by sampling assumes. A round that opens with fewer than
``rounds.min_participants`` active participants (round 1, opened when the federation is
created, before anyone enrolled) draws once that many are, on the timer, under the same
row lock; participants see ``cohort_size: null, in_cohort: false`` until then. Participants
enrolled after the draw are not in its cohort; revoked members drop out of it.

:func:`round_cohort` is the one answer to "who takes part in this round" for the rest of
the coordinator (completeness, quorum, uploads, secure aggregation).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from coordinator.domain.errors import ValidationFailed
from coordinator.domain.specs import ModelSpec, RoundPolicy, SamplingPolicy
from coordinator.store.models import Round
from coordinator.store.repository import ParticipantRepository, RoundCohortRepository

__all__ = [
    "Cohort",
    "check_sampling",
    "draw_cohort",
    "expected_cohort_size",
    "in_cohort",
    "memberships",
    "draw_if_due",
    "draw_pending",
    "round_cohort",
]

_RNG = secrets.SystemRandom()


def check_sampling(model: ModelSpec, rounds: RoundPolicy) -> None:
    """Refuse sampling where it cannot work: ``ease`` solves once on every participant's Gram."""
    if rounds.sampling is not None and model.kind == "ease":
        raise ValidationFailed(
            "rounds.sampling does not apply to model kind 'ease': its closed-form solve needs "
            "every participant's Gram matrix; remove rounds.sampling",
            field="rounds.sampling",
        )


def draw_cohort(policy: SamplingPolicy, population: Collection[str]) -> list[str]:
    """A fresh CSPRNG draw from ``population`` (ids), sorted for a stable record."""
    ids = sorted(population)  # the draw must not depend on a set's iteration order
    if policy.kind == "poisson":
        assert policy.rate is not None
        rate = policy.rate
        return [pid for pid in ids if _RNG.random() < rate]
    assert policy.size is not None
    return sorted(_RNG.sample(ids, min(policy.size, len(ids))))


def draw_pending(round_row: Round) -> bool:
    """A sampled round whose cohort is not drawn yet (too few participants so far)."""
    return round_row.sampled and round_row.population is None


def draw_if_due(
    session: Session, round_row: Round, policy: RoundPolicy, now: datetime
) -> list[str] | None:
    """Draw and store a sampled round's cohort once ``rounds.min_participants``
    participants are active; None if it waits (or was drawn already).

    The caller holds the round's row lock (the transaction that opens the round, or the
    timer's claim), so the draw happens exactly once across processes. A draw after the
    opening restarts the round's deadline: the round starts when its cohort exists.
    """
    if not draw_pending(round_row) or policy.sampling is None:
        return None
    active = ParticipantRepository(session).active_ids(round_row.federation_id)
    if len(active) < policy.min_participants:
        return None
    cohort = draw_cohort(policy.sampling, active)
    round_row.cohort_size = len(cohort)
    round_row.population = len(active)
    if policy.deadline_seconds is not None and round_row.opened_at != now:
        round_row.deadline_at = now + timedelta(seconds=policy.deadline_seconds)
    session.flush()  # the round's row exists before its members point at it
    RoundCohortRepository(session).add_members(round_row.id, cohort)
    return cohort


@dataclass(frozen=True)
class Cohort:
    """Who takes part in a round: ``members`` are active participants."""

    members: frozenset[str]
    sampled: bool  # False: every active participant (no rounds.sampling)


def round_cohort(session: Session, round_row: Round) -> Cohort:
    """The participants of ``round_row`` that can still contribute: the drawn cohort's
    active members for a sampled round (nobody before its draw), every active
    participant otherwise. Secure aggregation runs its protocol among these."""
    if not round_row.sampled:
        active = ParticipantRepository(session).active_ids(round_row.federation_id)
        return Cohort(members=frozenset(active), sampled=False)
    members = RoundCohortRepository(session).active_members(round_row.id)
    return Cohort(members=frozenset(members), sampled=True)


def in_cohort(session: Session, round_row: Round, participant_id: str) -> bool:
    """Whether ``participant_id`` was drawn into ``round_row`` (always, unsampled)."""
    if not round_row.sampled:
        return True
    return RoundCohortRepository(session).contains(round_row.id, participant_id)


def memberships(session: Session, participant_id: str, rows: Sequence[Round]) -> list[bool]:
    """For each round, whether ``participant_id`` is in it (one query for them all)."""
    sampled = [row.id for row in rows if row.sampled]
    drawn = RoundCohortRepository(session).rounds_containing(participant_id, sampled)
    return [not row.sampled or row.id in drawn for row in rows]


def expected_cohort_size(policy: SamplingPolicy | None, round_row: Round) -> float | None:
    """m, the fixed denominator of a sampled DP round: q x population (Poisson: the
    expected cohort, whatever was drawn) or the cohort drawn (fixed size); None unsampled."""
    if (
        policy is None
        or not round_row.sampled
        or round_row.cohort_size is None
        or round_row.population is None
    ):
        return None
    if policy.kind == "poisson":
        assert policy.rate is not None
        return max(policy.rate * round_row.population, 1.0)
    return float(max(round_row.cohort_size, 1))
