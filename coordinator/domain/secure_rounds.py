"""Secure aggregation inside the round lifecycle: the REST phases, durably stored.

A federation with ``privacy.secure_aggregation`` replaces the plaintext upload with four
phases inside the open round (the messages are ``participant_sdk.secagg.messages``, the
pure state machine is :class:`coordinator.domain.secagg.SecAggRound`)::

    advertise keys ─▶ share keys ─▶ masked input ─▶ unmask ─▶ done (the aggregation job
                                                               sums, noises, versions)
    any phase closing with fewer than ``threshold`` participants ─▶ aborted (round fails)

- **Durable.** The state (``SecAggRound.to_dict()``) lives in the round's ``secagg_states``
  row, rewritten after every change in the transaction that holds the round's row lock
  (the same lock as the plaintext upload and the aggregation's claim), so a restarted
  coordinator, or another replica on the same database, continues where it stood.
- **Phases close** when every participant expected in them answered (in the transaction
  of the last answer), or at their deadline: the advertisement at the round's deadline
  (below ``threshold`` or the quorum it follows ``rounds.below_quorum``), the later phases
  ``phase_seconds`` after they opened (the timer closes them, in ``claim_round``).
- **Sum or abort.** ``done`` hands the exact sum of the survivors' inputs to the
  aggregation job (the normal versioning path: server optimizer, DP noise if configured);
  ``aborted`` fails the round with nothing published, and the state machine has already
  deleted every masked input and share. Once the version is recorded the sum is deleted too.
- **Binding.** Every message names its federation, round and participant; the state
  machine refuses another round's, and the caller may only send its own.

Who takes part is :func:`round_cohort`, the one place that chooses it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from coordinator.domain import sampling
from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import (
    Conflict,
    FederationCompleted,
    NotFound,
    RoundClosed,
    RoundNotOpen,
    ValidationFailed,
)
from coordinator.domain.secagg import InvalidSecAggMessage, Phase, SecAggRound
from coordinator.domain.specs import ModelSpec, PrivacyPolicy, RoundPolicy, StrategySpec
from coordinator.store.models import Federation, Round, SecAggState, utc_now
from coordinator.store.repository import RoundRepository, SecAggRepository
from participant_sdk.secagg.keys import RoundContext
from participant_sdk.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    MessageError,
    ShareKeys,
    UnmaskResponse,
)
from participant_sdk.wire import TensorSpec

__all__ = [
    "MESSAGE_KINDS",
    "NotInCohort",
    "NotSecureAggregation",
    "SecAggStatus",
    "SecureAggregationRound",
    "check_secure_aggregation",
    "close_due_phase",
    "contributor_digest",
    "failure_reason",
    "forget_sum",
    "next_step_name",
    "receive",
    "round_cohort",
    "secure_sum",
    "status",
    "vector_length",
]

_OPEN = "open"  # lifecycle.RoundState.OPEN (lifecycle imports this module)


class SecureAggregationRound(Conflict):
    slug = "secure-aggregation-round"
    title = "This round uses secure aggregation"


class NotSecureAggregation(Conflict):
    slug = "not-secure-aggregation"
    title = "The federation does not use secure aggregation"


class NotInCohort(Conflict):
    slug = "not-in-cohort"
    title = "Not in this round's cohort"


# spec checks ---------------------------------------------------------------------------------
def check_secure_aggregation(
    model: ModelSpec, strategy: StrategySpec, privacy: PrivacyPolicy
) -> None:
    """Refuse a spec asking for secure aggregation together with what needs plaintext
    updates (robust aggregators, server-side norm checks and clipping, example weights,
    per-row denominators) — one 422 naming every setting to change."""
    policy = privacy.secure_aggregation
    if policy is None:
        return
    wrong = []
    if model.kind == "ease":
        wrong.append("model.kind 'ease' (its exact Gram sum is not supported; use 'mf' or 'ials')")
    if strategy.needs_individual_updates:
        wrong.append(
            f"strategy.aggregator = 'mean' (got {strategy.aggregator!r}: a robust aggregator "
            "reads each update, secure aggregation reveals only their sum)"
        )
    if strategy.update_norm_clip is not None:
        wrong.append(
            "strategy.update_norm_clip = null (the coordinator cannot clip updates it never "
            "sees: participants clip to privacy.secure_aggregation.clip_norm)"
        )
    if privacy.max_update_norm is not None:
        wrong.append(
            "privacy.max_update_norm = null (the coordinator cannot check the norm of an "
            "update it never sees; the fixed-point range bounds each input instead)"
        )
    if strategy.weighting != "uniform":
        wrong.append("strategy.weighting = 'uniform' (example weights would need each update)")
    if strategy.normalization != "total":
        wrong.append("strategy.normalization = 'total' (updates are dense: every row is sent)")
    if privacy.secure_clip_norm is None:
        wrong.append("privacy.secure_aggregation.clip_norm (or privacy.dp.clip_norm) set")
    elif (
        policy.clip_norm is not None
        and privacy.dp is not None
        and not math.isclose(policy.clip_norm, privacy.dp.clip_norm)
    ):
        wrong.append(
            "privacy.secure_aggregation.clip_norm equal to privacy.dp.clip_norm (or left out): "
            "the participants' clipping is DP's sensitivity bound"
        )
    if privacy.secure_clip_norm is not None and policy.threshold > policy.max_participants:
        wrong.append("privacy.secure_aggregation.threshold at most its max_participants")
    if wrong:
        raise ValidationFailed(
            "privacy.secure_aggregation needs " + "; ".join(wrong),
            field="privacy.secure_aggregation",
            changes=wrong,
        )


def vector_length(tensors: Mapping[str, TensorSpec]) -> int:
    """The dense vector a participant masks: every tensor flattened, in spec order."""
    return sum(math.prod(spec.shape) for spec in tensors.values())


def unflatten(
    vector: npt.NDArray[np.float64], tensors: Mapping[str, TensorSpec]
) -> dict[str, npt.NDArray[np.float64]]:
    out, start = {}, 0
    for name, spec in tensors.items():
        size = math.prod(spec.shape)
        out[name] = vector[start : start + size].reshape(spec.shape)
        start += size
    return out


# the cohort -----------------------------------------------------------------------------------
def round_cohort(session: Session, federation: Federation, round_row: Round) -> frozenset[str]:
    """Who takes part in a secure-aggregation round: the one place that chooses.

    The round's cohort (``sampling.round_cohort``): its drawn sample's active members when
    the federation samples participants per round (nobody before the draw), every active
    participant otherwise.
    """
    del federation  # the round row names its federation
    return sampling.round_cohort(session, round_row).members


# state load and store ---------------------------------------------------------------------------
def _fresh(federation: Federation, round_row: Round) -> SecAggRound:
    privacy = PrivacyPolicy.model_validate(federation.privacy)
    policy = privacy.secure_aggregation
    clip = privacy.secure_clip_norm
    assert policy is not None  # checked at creation
    assert clip is not None
    model = ModelSpec.model_validate(federation.model_spec)
    return SecAggRound(
        context=RoundContext(federation.id, round_row.number),
        threshold=policy.threshold,
        vector_length=vector_length(model.update_tensors()),
        clip=clip,
        max_participants=policy.max_participants,
        graph=policy.graph,
        degree=policy.degree,
        neighbour_threshold=policy.neighbour_threshold,
    )


# a masked input that lives in its own row and was not read (its id is what counts)
_NOT_READ = b""


def _load(
    session: Session,
    row: SecAggState,
    *,
    participant: str | None = None,
    all_words: bool = False,
) -> SecAggRound:
    """The round's state machine. Masked inputs and share ciphertexts live in rows of their
    own and are read only where needed: ``participant``'s masked input (a repeated upload is
    compared) and the share messages it sent or is sent (its inbox, a repeated share
    message), or every masked input (to unmask). The other sharers are present without
    their ciphertexts."""
    state = json.loads(row.state)
    machine = SecAggRound.from_dict(state)
    repository = SecAggRepository(session)
    sent: dict[str, dict[str, bytes]] = {sharer: {} for sharer in state.get("sharers", [])}
    if participant is not None and sent:
        for sender, recipient, ciphertext in repository.ciphertexts_of(row.round_id, participant):
            sent.setdefault(sender, {})[recipient] = ciphertext
    for sender, ciphertexts in sent.items():
        machine.shares.setdefault(
            sender, ShareKeys(context=machine.context, participant=sender, ciphertexts=ciphertexts)
        )
    if all_words:
        machine.masked = repository.all_masked(row.round_id)
        return machine
    machine.masked = dict.fromkeys(repository.masked_ids(row.round_id), _NOT_READ)
    if participant is not None and participant in machine.masked:
        machine.masked[participant] = (
            repository.masked_words(row.round_id, participant) or _NOT_READ
        )
    return machine


def _store(
    session: Session,
    row: SecAggState | None,
    round_row: Round,
    machine: SecAggRound,
    deadline: datetime | None,
    now: datetime,
) -> SecAggState:
    """Write the state: the JSON row (without masked inputs and share ciphertexts, naming
    who shared), a row per new masked input and per new share ciphertext, and none once the
    machine dropped them (an abort, or the end of the protocol)."""
    state = machine.to_dict()
    state["masked"] = {}
    state["shares"] = []
    state["sharers"] = sorted(machine.shares)
    text = json.dumps(state, separators=(",", ":"))
    # the round's progress as the round list shows it: masked inputs in, then survivors
    round_row.update_count = len(machine.survivors) or len(machine.masked)
    repository = SecAggRepository(session)
    stored_sharers: set[str] = set()
    if row is None:
        row = SecAggState(
            round_id=round_row.id,
            federation_id=round_row.federation_id,
            round_number=round_row.number,
            phase=machine.phase.value,
            phase_deadline_at=deadline,
            state=text,
            updated_at=now,
        )
        session.add(row)
        session.flush()  # the masked inputs' and ciphertexts' rows refer to it
    else:
        stored_sharers = set(json.loads(row.state).get("sharers", []))
        row.phase = machine.phase.value
        row.phase_deadline_at = deadline
        row.state = text
        row.updated_at = now
    if not machine.shares:
        repository.delete_ciphertexts(row.round_id)
    for sender, message in machine.shares.items():
        if sender not in stored_sharers:
            repository.add_ciphertexts(row.round_id, sender, dict(message.ciphertexts))
    if not machine.masked:
        repository.delete_masked(row.round_id)
        return row
    stored = set(repository.masked_ids(row.round_id))
    for participant, words in machine.masked.items():
        if words and participant not in stored:
            repository.add_masked(row.round_id, participant, words)
    return row


def _uses_secure_aggregation(federation: Federation) -> bool:
    return PrivacyPolicy.model_validate(federation.privacy).secure_aggregation is not None


def _phase_seconds(federation: Federation) -> float:
    policy = PrivacyPolicy.model_validate(federation.privacy).secure_aggregation
    assert policy is not None
    return policy.phase_seconds


# what the participant sees -----------------------------------------------------------------------
@dataclass(frozen=True)
class SecAggStatus:
    """One round's secure aggregation as one participant (or the admin) sees it."""

    federation_id: str
    round: int
    phase: str
    phase_deadline: datetime | None
    threshold: int
    clip_norm: float
    max_participants: int
    vector_length: int
    graph: str
    degree: int | None
    neighbour_threshold: int | None
    in_cohort: bool
    answered: bool
    roster: dict[str, Any] | None
    inbox: dict[str, Any] | None
    unmask_request: dict[str, Any] | None
    survivors: list[str] | None
    abort_reason: str | None


def _answers(machine: SecAggRound) -> set[str]:
    """Who sent the current phase's message."""
    answers: Mapping[str, object] = {}
    if machine.phase is Phase.ADVERTISE:
        answers = machine.advertised
    elif machine.phase is Phase.SHARE:
        answers = machine.shares
    elif machine.phase is Phase.MASKED:
        answers = machine.masked
    elif machine.phase is Phase.UNMASK:
        answers = machine.unmasked
    return set(answers)


def _status(
    machine: SecAggRound,
    deadline: datetime | None,
    participant: str | None,
    in_cohort: bool,
) -> SecAggStatus:
    phase = machine.phase
    roster = inbox = request = None
    if participant in machine.advertised and phase in (Phase.SHARE, Phase.MASKED, Phase.UNMASK):
        roster = machine.roster(participant).to_dict()
    if participant in machine.shares and phase is Phase.MASKED:
        inbox = machine.inbox(participant).to_dict()
    if participant in machine.survivors and phase is Phase.UNMASK:
        request = machine.unmask_request(participant).to_dict()
    return SecAggStatus(
        federation_id=machine.context.federation_id,
        round=machine.context.round_number,
        phase=phase.value,
        phase_deadline=deadline,
        threshold=machine.threshold,
        clip_norm=machine.clip,
        max_participants=machine.max_participants,
        vector_length=machine.vector_length,
        graph=machine.graph,
        # as drawn when the advertisement closed (the requested values are the spec's)
        degree=machine.degree if machine.ring else None,
        neighbour_threshold=machine.neighbour_threshold if machine.ring else None,
        in_cohort=in_cohort,
        answered=participant is not None and participant in _answers(machine),
        roster=roster,
        inbox=inbox,
        unmask_request=request,
        survivors=list(machine.survivors) if phase is Phase.DONE else None,
        abort_reason=machine.abort_reason,
    )


def _round_of(session: Session, federation: Federation, number: int, *, lock: bool) -> Round:
    if not _uses_secure_aggregation(federation):
        raise NotSecureAggregation(
            f"federation {federation.id} does not use secure aggregation; upload updates "
            f"with PUT …/rounds/{number}/update",
        )
    row = RoundRepository(session).get(federation.id, number, for_update=lock)
    if row is None:
        raise NotFound(
            f"round {number} does not exist; the current round is {federation.current_round}",
            slug="round-not-found",
            current_round=federation.current_round,
        )
    return row


def status(ctx: Context, principal: Principal, federation_id: str, number: int) -> SecAggStatus:
    """The round's phase and what the caller needs for its next message."""
    with ctx.read_sessions() as session:
        federation = load_federation(session, principal, federation_id)
        round_row = _round_of(session, federation, number, lock=False)
        row = SecAggRepository(session).get(round_row.id)
        participant = principal.participant_id
        machine = (
            _load(session, row, participant=participant)
            if row is not None
            else _fresh(federation, round_row)
        )
        deadline = row.phase_deadline_at if row is not None else round_row.deadline_at
        cohort = round_cohort(session, federation, round_row)
        return _status(machine, deadline, participant, participant in cohort)


# receiving messages -------------------------------------------------------------------------------
MESSAGE_KINDS: dict[str, tuple[Phase, Callable[[Mapping[str, Any]], Any]]] = {
    "keys": (Phase.ADVERTISE, AdvertiseKeys.from_dict),
    "shares": (Phase.SHARE, ShareKeys.from_dict),
    "masked-input": (Phase.MASKED, MaskedInput.from_dict),
    "unmask": (Phase.UNMASK, UnmaskResponse.from_dict),
}


def _deliver(machine: SecAggRound, message: Any) -> None:
    if isinstance(message, AdvertiseKeys):
        machine.receive_keys(message)
    elif isinstance(message, ShareKeys):
        machine.receive_shares(message)
    elif isinstance(message, MaskedInput):
        machine.receive_masked_input(message)
    else:
        machine.receive_unmask(message)


def _expected(machine: SecAggRound, cohort: frozenset[str]) -> set[str]:
    """Who must answer before the current phase may close early."""
    return {
        Phase.ADVERTISE: set(cohort),
        Phase.SHARE: set(machine.advertised),
        Phase.MASKED: set(machine.shares),
        Phase.UNMASK: set(machine.survivors),
    }.get(machine.phase, set())


def _close_phase(session: Session, round_id: str, machine: SecAggRound) -> None:
    """Close the current phase with whoever answered (the state machine aborts below t)."""
    if machine.phase is Phase.UNMASK:  # the sum needs every survivor's masked input
        machine.masked = SecAggRepository(session).all_masked(round_id)
    if machine.phase is Phase.ADVERTISE:
        machine.close_advertising()
    elif machine.phase is Phase.SHARE:
        machine.end_sharing()
    elif machine.phase is Phase.MASKED:
        machine.close_masked()
    elif machine.phase is Phase.UNMASK:
        machine.finish()


def _next_deadline(federation: Federation, machine: SecAggRound, now: datetime) -> datetime | None:
    if machine.phase in (Phase.SHARE, Phase.MASKED, Phase.UNMASK):
        return now + timedelta(seconds=_phase_seconds(federation))
    return None


def receive(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    number: int,
    kind: str,
    body: Mapping[str, Any],
) -> tuple[SecAggStatus, bool]:
    """Validate and durably record one participant's message; close the phase if it was
    the last one expected. Returns the caller's view and whether the round's protocol
    ended (done or aborted: the aggregation job has work)."""
    participant = principal.require_participant()
    phase, parse = MESSAGE_KINDS[kind]
    now = utc_now()
    with ctx.sessions.begin() as session:
        federation = load_federation(session, principal, federation_id)  # 403/404 first
        try:
            message = parse(body)
        except MessageError as error:
            raise InvalidSecAggMessage(str(error)) from error
        if message.participant != participant:
            raise InvalidSecAggMessage(
                f"a participant sends only its own messages: this token is {participant!r}, "
                f"the message names {message.participant!r}",
                field="participant",
            )
        # the round's row lock orders this change against every other message and the claim
        round_row = _round_of(session, federation, number, lock=True)
        if federation.state != "active":
            raise FederationCompleted(
                f"federation {federation_id} is {federation.state}; no round is open",
                current_round=federation.current_round,
            )
        if round_row.state != _OPEN or federation.current_round != number:
            raise RoundClosed(
                f"round {number} is {round_row.state}; the current round is "
                f"{federation.current_round}",
                round=number,
                current_round=federation.current_round,
            )
        repository = SecAggRepository(session)
        row = repository.get(round_row.id)
        machine = (
            _load(session, row, participant=participant)
            if row is not None
            else _fresh(federation, round_row)
        )
        deadline = row.phase_deadline_at if row is not None else None
        cohort = round_cohort(session, federation, round_row)
        if phase is Phase.ADVERTISE and participant not in cohort:
            raise NotInCohort(f"participant {participant!r} is not in round {number}'s cohort")
        _deliver(machine, message)
        ended = False
        if _expected(machine, cohort) <= _answers(machine) and _may_close_early(
            federation, round_row, machine
        ):
            _close_phase(session, round_row.id, machine)
            deadline = _next_deadline(federation, machine, now)
            ended = machine.phase in (Phase.DONE, Phase.ABORTED)
        _store(session, row, round_row, machine, deadline, now)
        return _status(machine, deadline, participant, participant in cohort), ended


def _may_close_early(federation: Federation, round_row: Round, machine: SecAggRound) -> bool:
    """The advertisement closes early only with enough participants: the cohort can be
    smaller than the threshold while participants are still enrolling."""
    if machine.phase is not Phase.ADVERTISE:
        return True
    return len(machine.advertised) >= max(machine.threshold, _quorum(federation, round_row))


def _quorum(federation: Federation, round_row: Round) -> int:
    """The round's quorum (all of a drawn cohort smaller than ``min_participants``)."""
    policy = RoundPolicy.model_validate(federation.round_policy)
    return sampling.quorum(round_row, policy.min_participants)


# the timer and the aggregation job ---------------------------------------------------------------
def close_due_phase(
    session: Session, federation: Federation, round_row: Round, now: datetime
) -> None:
    """Close a phase whose deadline passed (the caller holds the round's row lock).

    The advertisement follows the round's deadline: with at least ``threshold`` and the
    quorum it closes; below, ``rounds.below_quorum`` extends the deadline or aborts.
    """
    if not _uses_secure_aggregation(federation) or round_row.state != _OPEN:
        return
    row = SecAggRepository(session).get(round_row.id)
    phase = row.phase if row is not None else Phase.ADVERTISE.value
    # decided from the columns: the (possibly large) state is parsed only to change it
    if phase == Phase.ADVERTISE.value:
        if round_row.deadline_at is None or round_row.deadline_at > now:
            return
    elif phase in (Phase.DONE.value, Phase.ABORTED.value):
        return
    elif row is None or row.phase_deadline_at is None or row.phase_deadline_at > now:
        return
    machine = _load(session, row) if row is not None else _fresh(federation, round_row)
    deadline = row.phase_deadline_at if row is not None else None
    if machine.phase is Phase.ADVERTISE:
        if round_row.deadline_at is None or round_row.deadline_at > now:
            return
        policy = RoundPolicy.model_validate(federation.round_policy)
        quorum = _quorum(federation, round_row)
        if len(machine.advertised) < max(machine.threshold, quorum) and (
            policy.below_quorum == "extend"
        ):
            round_row.deadline_at = now + timedelta(seconds=policy.deadline_seconds or 0)
            return
        if len(machine.advertised) < quorum:
            machine.abort(
                f"{len(machine.advertised)} participants advertised keys by the deadline, "
                f"below the quorum {quorum}"
            )
        else:
            _close_phase(session, round_row.id, machine)
    elif machine.phase in (Phase.SHARE, Phase.MASKED, Phase.UNMASK):
        if deadline is None or deadline > now:
            return
        _close_phase(session, round_row.id, machine)
    else:
        return
    _store(session, row, round_row, machine, _next_deadline(federation, machine, now), now)


def next_step_name(session: Session, round_row: Round, *, admin: bool) -> str:
    """What the round needs from the aggregation job: ``aggregate`` (the sum is ready),
    ``fail`` (aborted) or ``wait`` (the protocol runs). The admin may not cut it short."""
    row = SecAggRepository(session).get(round_row.id)
    phase = row.phase if row is not None else Phase.ADVERTISE.value
    if admin and phase != Phase.DONE.value:
        raise RoundNotOpen(
            f"round {round_row.number} is in the secure-aggregation phase {phase!r}; it "
            "aggregates by itself once the survivors' sum is unmasked",
            round=round_row.number,
            phase=phase,
        )
    if phase == Phase.DONE.value:
        return "aggregate"
    if phase == Phase.ABORTED.value:
        return "fail"
    return "wait"


def failure_reason(session: Session, round_row: Round) -> str | None:
    """Why the round's secure aggregation aborted (None: it did not)."""
    row = SecAggRepository(session).get(round_row.id)
    if row is None or row.phase != Phase.ABORTED.value:
        return None
    return f"secure aggregation aborted: {_load(session, row).abort_reason}"


def secure_sum(
    session: Session, round_row: Round, tensors: Mapping[str, TensorSpec]
) -> tuple[dict[str, npt.NDArray[np.float64]], tuple[str, ...]] | None:
    """The decoded float64 sum of the survivors' clipped updates, per tensor, and the
    survivors; None when the round does not use secure aggregation."""
    row = SecAggRepository(session).get(round_row.id)
    if row is None or row.phase != Phase.DONE.value:
        return None
    machine = _load(session, row)
    total = machine.codec.decode_sum(machine.result_words(), len(machine.survivors))
    return unflatten(total, tensors), tuple(
        contributor_digest(machine.context, p) for p in machine.survivors
    )


def contributor_digest(context: RoundContext, participant: str) -> str:
    """What a version's lineage records per summed participant under secure aggregation
    (there is no update blob): a sha256 naming the participant in this round only."""
    return hashlib.sha256(context.bind("contributor", participant)).hexdigest()


def forget_sum(session: Session, round_id: str) -> None:
    """Delete the unmasked sum once its version is recorded: only the published model
    (noised, under DP) remains."""
    row = SecAggRepository(session).get(round_id)
    if row is None:
        return
    state = json.loads(row.state)
    state["result"] = None
    row.state = json.dumps(state, separators=(",", ":"))
