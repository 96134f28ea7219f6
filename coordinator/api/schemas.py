"""Request and response schemas of the REST API (v1), named by role."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coordinator.domain.admin_tokens import MAX_EXPIRES_IN_SECONDS, MIN_EXPIRES_IN_SECONDS
from coordinator.domain.round_notifier import RoundNotifier
from coordinator.domain.specs import (
    DB_INT_MAX,
    DeployPolicy,
    LimitsPolicy,
    ModelSpec,
    PrivacyPolicy,
    RoundPolicy,
    StrategySpec,
    TargetSpec,
    TransportPolicy,
)


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RequestSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Field descriptions used by more than one schema.
_CREATED = "When the coordinator recorded it (UTC)."
_ITEMS = "The items, oldest first."


class FederationCreate(RequestSchema):
    """What a new federation trains and how: the admin's request to create one."""

    name: str = Field(min_length=1, max_length=200, description="A name for people to read.")
    model: ModelSpec = Field(description="The model every participant trains.")
    strategy: StrategySpec = Field(
        default=StrategySpec(), description="How the coordinator combines the updates."
    )
    rounds: RoundPolicy = Field(
        default=RoundPolicy(), description="How many rounds, their quorum and deadlines."
    )
    catalog: list[str] | None = Field(
        default=None,
        description="External item ids (num_items of them); row i of the model is catalog[i].",
    )
    target: TargetSpec | None = Field(
        default=None, description="Stop early once validation reaches this; null = no target."
    )
    deploy: DeployPolicy = Field(
        default=DeployPolicy(), description="Which version goes live when training stops."
    )
    privacy: PrivacyPolicy = Field(
        default=PrivacyPolicy(), description="Update norm bound and differential privacy."
    )
    limits: LimitsPolicy = Field(
        default=LimitsPolicy(),
        description="Per-federation bounds on what participants report (sizes, metrics).",
    )
    transport: TransportPolicy = Field(
        default=TransportPolicy(),
        description="How updates and model downloads travel: float32, float16 or int8.",
    )

    @model_validator(mode="after")
    def _metrics_declared(self) -> FederationCreate:
        for where, metric in (("deploy.metric", self.deploy.metric),) + (
            (("target.metric", self.target.metric),) if self.target else ()
        ):
            if metric not in self.limits.metrics:
                raise ValueError(
                    f"{where} {metric!r} is not among limits.metrics {list(self.limits.metrics)}"
                    "; add it there"
                )
        return self

    @model_validator(mode="after")
    def _catalog_matches_model(self) -> FederationCreate:
        if self.catalog is not None:
            if len(self.catalog) != self.model.num_items:
                raise ValueError(
                    f"catalog has {len(self.catalog)} ids but model.num_items is "
                    f"{self.model.num_items}"
                )
            if len(set(self.catalog)) != len(self.catalog):
                raise ValueError("catalog ids must be distinct")
        return self


class PrivacySpent(Schema):
    """The differential privacy a federation has spent so far."""

    epsilon: float | None = Field(
        description=(
            "Epsilon spent at `delta`, with amplification by sampling at `sampling_rate` "
            "(see `accountant`); null = unbounded: noise_multiplier 0 clips without a "
            "privacy guarantee."
        )
    )
    delta: float = Field(description="The delta of the (epsilon, delta) guarantee.")
    rounds: int = Field(description="Aggregated (noisy) rounds so far.")
    accountant: Literal["pld", "rdp-replace-one", "rdp"] = Field(
        default="pld",
        description="`pld`: privacy loss distributions (dp-accounting), add/remove-one "
        "adjacency, Poisson or no sampling; `rdp-replace-one`: fixed-size sampling, RDP "
        "under replace-one adjacency (a different neighbouring relation, see "
        "docs/security.md); `rdp`: versions recorded before the PLD accountant.",
    )
    sampling_rate: float = Field(
        default=1.0,
        description="q, the rate the rounds were accounted at (1 = every participant in "
        "every round; fixed-size: the largest size / population drawn).",
    )
    clip_norm: float | None = Field(
        default=None,
        description="Adaptive clipping only: the C this version's round clipped to.",
        examples=[0.83],
    )
    next_clip_norm: float | None = Field(
        default=None,
        description="Adaptive clipping only: the C the next round clips to (moved towards "
        "`target_quantile` from the noised count of unclipped updates).",
        examples=[0.79],
    )


class Federation(Schema):
    """A federation: its configuration and where its training stands."""

    id: str = Field(description="The federation id used in every path.")
    name: str = Field(description="The name given at creation.")
    state: Literal["active", "evaluating", "completed", "failed"] = Field(
        description="`active`: rounds run; `evaluating`: training stopped, waiting for the "
        "final version's validation figures (no round is open); `completed`: done; "
        "`failed`: `rounds.max_failed_rounds` rounds failed; no round opens again."
    )
    model: ModelSpec = Field(description="The model every participant trains.")
    strategy: StrategySpec = Field(description="How the coordinator combines the updates.")
    rounds: RoundPolicy = Field(description="How many rounds, their quorum and deadlines.")
    target: TargetSpec | None = Field(description="The early-stop target; null = none.")
    deploy: DeployPolicy = Field(description="Which version goes live when training stops.")
    privacy: PrivacyPolicy = Field(description="Update norm bound and differential privacy.")
    limits: LimitsPolicy = Field(description="Per-federation bounds on what participants report.")
    transport: TransportPolicy = Field(
        default=TransportPolicy(),
        description="How updates and model downloads travel: upload in its `encoding`.",
    )
    privacy_spent: PrivacySpent | None = Field(
        description="Differential privacy spent so far; null without `privacy.dp`."
    )
    current_round: int | None = Field(
        description="Open round number; null once evaluating or completed."
    )
    latest_version: int = Field(description="The newest model version (0 = the initial one).")
    deployed_version: int | None = Field(description="The live version; null = none yet.")
    participant_count: int = Field(description="Participants enrolled (active or revoked).")
    created_at: datetime = Field(description=_CREATED)
    max_wait_seconds: int | None = Field(
        default=None,
        description="The longest `wait` this coordinator holds a long-poll of "
        "`rounds/current` (as on its answers): a participant's first request can already "
        "be a full wait.",
    )
    max_cohort_wait_seconds: int | None = Field(
        default=None,
        description="The longest `wait` of a long-poll with `after` and `in_cohort=true` "
        "(as on `rounds/current` answers).",
    )


class FederationList(Schema):
    """The federations the caller may see."""

    items: list[Federation] = Field(description=_ITEMS)


class Catalog(Schema):
    """The federation's item catalog."""

    items: list[str] = Field(
        description="External item id of each model row, in row order; empty when the "
        "federation has no catalog (rows are then the item ids)."
    )


class ParticipantCreate(RequestSchema):
    """The admin's request to enrol a participant."""

    name: str = Field(min_length=1, max_length=200, description="A name for people to read.")


class Participant(Schema):
    """A participant of one federation (never with its token)."""

    id: str = Field(description="The participant id.")
    name: str = Field(description="The name given at enrolment.")
    state: Literal["active", "revoked"] = Field(
        description="`revoked`: its token no longer works (the admin may re-enrol it)."
    )
    created_at: datetime = Field(description=_CREATED)
    token_expires_at: datetime | None = Field(
        default=None,
        description="When the current token stops working (refresh it before: POST "
        "…/participants/me/token); null for tokens issued before expiry existed.",
    )


class EnrolledParticipant(Participant):
    """A participant just enrolled or re-enrolled, with its token (shown only this once)."""

    token: str = Field(description="Bearer token of this participant; shown only once.")


class ParticipantList(Schema):
    """The federation's participants, active and revoked."""

    items: list[Participant] = Field(description=_ITEMS)


class AdminTokenCreate(RequestSchema):
    """The admin's request for another admin token."""

    name: str = Field(
        min_length=1, max_length=200, description="What it is for, for people to read."
    )
    expires_in_seconds: int | None = Field(
        default=None,
        ge=MIN_EXPIRES_IN_SECONDS,
        le=MAX_EXPIRES_IN_SECONDS,
        description="Lifetime from now, 60 s to 366 days; default: the coordinator's "
        "FEDREC_ADMIN_TOKEN_TTL_SECONDS (30 days unless configured).",
    )


class AdminToken(Schema):
    """An admin token (never the token itself)."""

    id: str = Field(description="The admin token's id (revoke it by this id).")
    name: str = Field(description="The name given at creation; `bootstrap` for that one.")
    kind: Literal["bootstrap", "issued"] = Field(
        description="`bootstrap`: FEDREC_ADMIN_TOKEN or data_dir/admin_token, registered "
        "when a coordinator first started with it; `issued`: created by POST "
        "/v1/admin/tokens."
    )
    state: Literal["active", "expired", "revoked"] = Field(description="Whether it works now.")
    created_at: datetime = Field(description=_CREATED)
    expires_at: datetime = Field(description="When it stops working (UTC).")
    revoked_at: datetime | None = Field(description="When it was revoked; null if it was not.")
    created_by: str = Field(
        description="`coordinator` (a bootstrap token), `admin-token:<id>`, or `admin`."
    )


class IssuedAdminToken(AdminToken):
    """An admin token just created, with the token (shown only this once)."""

    token: str = Field(description="The admin bearer token; shown only once.")


class AdminTokenList(Schema):
    """Every admin token: active, expired and revoked."""

    items: list[AdminToken] = Field(description=_ITEMS)


class Round(Schema):
    """One training round: participants upload updates of its base version."""

    number: int = Field(description="Round number, from 1.")
    state: Literal["open", "aggregating", "closed", "failed"] = Field(
        description="`open`: takes uploads; `aggregating`: being combined; `closed`: made "
        "`result_version`; `failed`: closed below quorum without a version."
    )
    base_version: int = Field(description="The model version the updates are deltas of.")
    update_count: int = Field(description="Updates accepted so far.")
    result_version: int | None = Field(description="The version it produced; null until then.")
    opened_at: datetime = Field(description="When it opened (UTC).")
    closed_at: datetime | None = Field(description="When it closed or failed (UTC).")
    deadline_at: datetime | None = Field(description="When it closes at the latest (UTC).")
    cohort_size: int | None = Field(
        default=None,
        description="Under `rounds.sampling`: how many participants were drawn into this "
        "round when it opened; null: every active participant takes part.",
    )
    in_cohort: bool | None = Field(
        default=None,
        description="For a participant token: whether this participant takes part in this "
        "round (false: it was not sampled; do not train, wait for the next round with "
        "`after`); null for the admin.",
    )
    upload_takes_evaluation: bool = Field(
        default=True,
        description="The upload (`PUT …/rounds/{number}/update`) may carry the "
        "participant's validation figures of `base_version` in the `X-Base-Evaluation` "
        'header (JSON `{"split": "validation", "metrics": {…}, "num_users": n}`), '
        "recorded with the update in one transaction: no separate evaluation report.",
    )
    max_wait_seconds: int | None = Field(
        default=None,
        description="On `rounds/current` answers: the longest `wait` this coordinator holds "
        "a long-poll (FEDREC_MAX_LONG_POLL_SECONDS). A waiting participant asks for that "
        "much (or less, behind a proxy with a shorter timeout); null elsewhere.",
    )
    max_cohort_wait_seconds: int | None = Field(
        default=None,
        description="On `rounds/current` answers: the longest `wait` of a long-poll with "
        "`after` and `in_cohort=true` (FEDREC_MAX_COHORT_WAIT_SECONDS, at least "
        "`max_wait_seconds`). Such a poll is answered at once for a round its participant "
        "is drawn into, so a participant sitting rounds out renews it only this often; "
        "null elsewhere.",
    )


def round_out(
    row: Any,
    in_cohort: bool | None,
    max_wait_seconds: int | None = None,
    max_cohort_wait_seconds: int | None = None,
) -> Round:
    return Round.model_validate(row).model_copy(
        update={
            "in_cohort": in_cohort,
            "max_wait_seconds": max_wait_seconds,
            "max_cohort_wait_seconds": max_cohort_wait_seconds,
        }
    )


class RoundList(Schema):
    """Every round of the federation."""

    items: list[Round] = Field(description=_ITEMS)


class Receipt(Schema):
    """The coordinator's receipt of an accepted update."""

    update_id: str = Field(description="The update's id.")
    round: int = Field(description="The round it counts for.")
    sha256: str = Field(description="sha256 of the bytes received (hex).")
    size: int = Field(description="Bytes received.")
    num_examples: int = Field(description="Training examples behind it (its weight).")
    received_at: datetime = Field(description="When it was accepted (UTC).")


class EncodedWeights(Schema):
    """A version's weights in one compressed encoding."""

    sha256: str = Field(description="sha256 of these bytes (hex; the download's ETag).")
    size: int = Field(description="Size of these bytes.")


class ModelVersion(Schema):
    """A model version and its place in the lineage."""

    version: int = Field(description="Version number; 0 is the initial model.")
    round: int | None = Field(description="The round that made it; null for version 0.")
    parent: int | None = Field(description="The version it was made from; null for 0.")
    sha256: str = Field(description="sha256 of its safetensors bytes (hex; also the ETag).")
    chain_hash: str = Field(
        description="sha256 over the parent's chain hash and this version's facts: "
        "`fedrec verify-lineage` recomputes the chain."
    )
    size: int = Field(description="Size of the safetensors bytes.")
    created_at: datetime = Field(description=_CREATED)
    contributors: list[str] = Field(description="Participant ids whose updates it combines.")
    step_scale: float = Field(
        description="Scale of the server step that made this version: 1, or less once the "
        "coordinator backed off a diverging federation (non-finite weights or a validation "
        "collapse); the next round inherits it."
    )
    restored_from: int | None = Field(
        description="Set when a validation collapse was undone: the best validated version "
        "whose weights this version carries (its parent is still the previous version)."
    )
    privacy_spent: PrivacySpent | None = Field(
        default=None,
        description="Under `privacy.dp`: the (epsilon, delta) spent by every round up to "
        "this version, computed once when it was recorded (and signed in its manifest); "
        "null without DP.",
    )
    server_state_sha256: str | None = Field(
        default=None,
        description="sha256 of the server optimizer's state stored with this version "
        "(e.g. FedAdam's moments; null for a stateless optimizer). Not part of `chain_hash`; "
        "`verify-lineage` checks the blob.",
    )
    manifest: str | None = Field(
        default=None,
        description="The version's canonical manifest (JSON text) that `signature` signs: "
        "federation, version and count, parent, round, sha256, size, chain hash, server "
        "state, contributors digest, created_at, back-off fields, privacy spent. Null for "
        "versions recorded before signing existed.",
    )
    signature: str | None = Field(
        default=None,
        description="Base64 Ed25519 signature of `manifest` by the coordinator's lineage "
        "key (`GET /v1/signing-key`).",
    )
    encodings: dict[str, EncodedWeights] | None = Field(
        default=None,
        description="The weights in the federation's compressed transport encoding "
        "(`float16` or `int8`), also named by `manifest`; download them with "
        "`…/weights?encoding=`. Null: float32 only.",
    )


class SigningKey(Schema):
    """The public half of the key that signs every model version's manifest."""

    algorithm: Literal["Ed25519"] = Field(description="The signature algorithm.")
    public_key: str = Field(description="The raw 32-byte public key, base64: pin it.")
    key_id: str = Field(description="sha256 of the raw public key, first 16 hex digits.")


class AuditEvent(Schema):
    """One security-relevant event of the append-only, HMAC-chained audit log."""

    seq: int = Field(description="Position in the chain, from 1; page with `?after=`.")
    created_at: datetime = Field(description=_CREATED)
    actor: str = Field(
        description="`admin`, `participant:<id>`, `coordinator`, `policy:<name>` or "
        "`anonymous` (a token nobody holds)."
    )
    action: str = Field(
        description="enrol, revoke, reenrol, upload, aggregate, round-failed, stop, "
        "budget-refusal, auto, promote, rollback, auth-failure."
    )
    federation_id: str | None = Field(description="The federation concerned, if any.")
    subject: str | None = Field(description="What it acted on: a participant id, a round.")
    outcome: str = Field(description="`ok`, `refused` or `failed`.")
    detail: dict[str, Any] = Field(
        description="Small facts (digests, counts, the problem slug); never a token or tensor."
    )
    prev_hash: str = Field(description="The previous event's `hash` (the chain's link).")
    hash: str = Field(description="HMAC-SHA256 under the audit key of prev_hash and the event.")


class AuditEventList(Schema):
    """A page of the audit log."""

    items: list[AuditEvent] = Field(description=_ITEMS)


class ModelVersionList(Schema):
    """Every model version of the federation."""

    items: list[ModelVersion] = Field(description=_ITEMS)


class EvaluationCreate(RequestSchema):
    """A participant's metrics of one model version on its own held-out data."""

    split: Literal["validation", "test"] = Field(
        description="`validation` figures steer stopping and deployment; `test` only reports."
    )
    metrics: dict[str, float] = Field(
        description="Metric name (e.g. `ndcg@10`) to value in [0, 1]; only the names the "
        "federation declares in `limits.metrics`.",
        min_length=1,
        max_length=32,
    )
    num_users: int = Field(
        gt=0,
        le=DB_INT_MAX,
        description="Users evaluated; the weight of these figures (at most the "
        "federation's `limits.max_num_users`).",
    )

    @model_validator(mode="after")
    def _metrics_in_range(self) -> EvaluationCreate:
        import re

        from coordinator.domain.specs import METRIC_PATTERN

        for name, value in self.metrics.items():
            if not re.match(METRIC_PATTERN, name):
                raise ValueError(f"unknown metric name {name!r}; use e.g. 'ndcg@10', 'hr@10'")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"metric {name!r} must lie in [0, 1], got {value}")
        return self


class Evaluation(Schema):
    """One participant's recorded metrics of one version and split."""

    version: int = Field(description="The model version evaluated.")
    split: str = Field(description="`validation` or `test`.")
    metrics: dict[str, float] = Field(description="Metric name to value in [0, 1].")
    num_users: int = Field(description="Users evaluated.")
    participant_id: str = Field(description="The participant that reported them.")
    created_at: datetime = Field(description="When they were (last) reported (UTC).")


class MetricsRow(Schema):
    """The federation's metrics of one version and split, over every participant."""

    version: int = Field(description="The model version.")
    round: int | None = Field(description="The round that made it; null for version 0.")
    split: str = Field(description="`validation` or `test`.")
    metrics: dict[str, float] = Field(
        description="Metric name to the mean of the participants' values, weighted by `num_users`."
    )
    num_users: int = Field(description="Users evaluated, over every participant.")
    participants: int = Field(description="Participants that reported.")


class MetricsHistory(Schema):
    """The federation's quality history: metrics per version and split."""

    items: list[MetricsRow] = Field(description="By version, then split.")


class DeploymentCreate(RequestSchema):
    """The admin's request to make a version live."""

    version: int = Field(
        ge=0, le=DB_INT_MAX, description="The version to serve: newer promotes, older rolls back."
    )


class DeploymentEvent(Schema):
    """One change of the live version."""

    version: int = Field(description="The version made live.")
    actor: str = Field(description="Who made it live: `admin`, or `policy:<name>` when automatic.")
    reason: str = Field(description="`auto`, `promote` or `rollback`.")
    metric_value: float | None = Field(
        description="The deploy metric's validation value that chose it (`auto` only)."
    )
    created_at: datetime = Field(description="When it went live (UTC).")


class Deployment(Schema):
    """The live version of a federation and how it got there."""

    version: int = Field(description="The live version.")
    policy: str = Field(description="The federation's deploy policy (`best`, `latest`, `none`).")
    deployed_at: datetime = Field(description="When the live version went live (UTC).")
    deployed_by: str = Field(description="Who made it live.")
    history: list[DeploymentEvent] = Field(description="Every change, oldest first.")


class Health(Schema):
    """A health answer."""

    status: str = Field(description="`ok` (alive) or `ready` (database and blobs reachable).")


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every 4xx and 5xx answer. Problem types may
    add members (e.g. `field`, `errors`, `round`)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        examples=["urn:fedrec:problem:round-closed"],
        description="`urn:fedrec:problem:<slug>`: what went wrong, for programs.",
    )
    title: str = Field(description="The problem type in words.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="This occurrence, and what to do about it.")
    instance: str | None = Field(default=None, description="The request path.")


def federation_out(view: Any, long_polls: RoundNotifier | None = None) -> Federation:
    """``long_polls``: the process's round notifier, whose long-poll maxima the answer
    advertises (so a participant's first request can be a full wait)."""
    row = view.row
    return Federation(
        id=row.id,
        name=row.name,
        state=row.state,
        model=ModelSpec.model_validate(row.model_spec),
        strategy=StrategySpec.model_validate(row.strategy),
        rounds=RoundPolicy.model_validate(row.round_policy),
        target=TargetSpec.model_validate(row.target) if row.target else None,
        deploy=DeployPolicy.model_validate(row.deploy_policy),
        privacy=PrivacyPolicy.model_validate(row.privacy),
        limits=LimitsPolicy.model_validate(row.limits or {}),
        transport=TransportPolicy.model_validate(row.transport or {}),
        privacy_spent=PrivacySpent.model_validate(spent) if (spent := view.privacy_spent) else None,
        current_round=row.current_round,
        latest_version=row.latest_version,
        deployed_version=view.deployed_version,
        participant_count=view.participant_count,
        created_at=row.created_at,
        max_wait_seconds=long_polls.max_wait_seconds if long_polls else None,
        max_cohort_wait_seconds=long_polls.max_cohort_wait_seconds if long_polls else None,
    )


def model_version_out(row: Any) -> ModelVersion:
    return ModelVersion(
        version=row.version,
        round=row.round_number,
        parent=row.parent,
        sha256=row.sha256,
        chain_hash=row.chain_hash,
        size=row.size,
        created_at=row.created_at,
        contributors=list(row.contributors),
        step_scale=row.step_scale,
        restored_from=row.restored_from,
        server_state_sha256=row.server_state_sha256,
        manifest=row.manifest,
        signature=row.signature,
        encodings=row.encodings or None,
        privacy_spent=PrivacySpent.model_validate(row.privacy_spent) if row.privacy_spent else None,
    )


def receipt_out(row: Any) -> Receipt:
    return Receipt(
        update_id=row.id,
        round=row.round_number,
        sha256=row.sha256,
        size=row.size,
        num_examples=row.num_examples,
        received_at=row.received_at,
    )


# secure aggregation -------------------------------------------------------------------------
_B64 = "standard base64 with padding"
_SECAGG_FEDERATION = "The federation the message belongs to (must match the path)."
_SECAGG_ROUND = "The round the message belongs to (must match the path)."
_SECAGG_PARTICIPANT = "The sender: the participant id of the token (only its own messages)."


class _SecAggMessage(RequestSchema):
    federation_id: str = Field(min_length=1, max_length=64, description=_SECAGG_FEDERATION)
    round: int = Field(ge=0, le=DB_INT_MAX, description=_SECAGG_ROUND)
    participant: str = Field(min_length=1, max_length=64, description=_SECAGG_PARTICIPANT)


class SecAggKeys(_SecAggMessage):
    """Phase 1 (advertise keys): the participant's two X25519 public keys for this round and
    its commitment to its self-mask seed."""

    encryption_key: str = Field(
        max_length=64, description=f"X25519 public key for the share messages ({_B64}, 32 bytes)."
    )
    mask_key: str = Field(
        max_length=64, description=f"X25519 public key for the pairwise masks ({_B64}, 32 bytes)."
    )
    self_mask_commitment: str = Field(
        max_length=64,
        description=f"SHA-256 commitment to the self-mask seed, bound to the round ({_B64}).",
    )


class SecAggShares(_SecAggMessage):
    """Phase 2 (share keys): Shamir shares of the sender's self-mask seed and mask key, one
    ChaCha20-Poly1305 ciphertext per other roster member, which the coordinator cannot open."""

    ciphertexts: dict[str, str] = Field(
        description=f"Recipient participant id -> ciphertext ({_B64}, 160 bytes); exactly "
        "the other members of the roster."
    )


class SecAggMaskedInput(_SecAggMessage):
    """Phase 3 (masked input): the clipped, fixed-point update plus the self mask and the pair
    masks, as little-endian uint32 words. Alone it is uniformly random."""

    words: str = Field(
        description=f"vector_length uint32 words, little-endian ({_B64}): the dense update "
        "(every tensor flattened in spec order) clipped to clip_norm, encoded, masked."
    )


class SecAggUnmask(_SecAggMessage):
    """Phase 4 (unmask): the sender's shares of each survivor's self-mask seed and of each
    dropped participant's mask key, never both for one participant."""

    self_mask_shares: dict[str, str] = Field(
        description=f"Survivor id -> the sender's share of its self-mask seed ({_B64}, 66 bytes)."
    )
    mask_key_shares: dict[str, str] = Field(
        description=f"Dropped id -> the sender's share of its mask key ({_B64}, 66 bytes)."
    )


class SecAggStatus(Schema):
    """A round's secure aggregation as the caller sees it: the phase, the encoding, and what
    the caller needs for its next message."""

    federation_id: str = Field(description="The federation.")
    round: int = Field(description="The round.")
    phase: Literal["advertise", "share", "masked", "unmask", "done", "aborted"] = Field(
        description="`advertise`: send keys; `share`: send shares (to the `roster`); "
        "`masked`: send the masked input (using `inbox`); `unmask`: answer `unmask_request`; "
        "`done`: the survivors' sum is unmasked (the round aggregates it); `aborted`: fewer "
        "than `threshold` took part, nothing is published and the round fails."
    )
    phase_deadline: datetime | None = Field(
        description="When the phase closes without those that have not answered (UTC); the "
        "advertisement closes at the round's deadline (null: none, it waits for the cohort)."
    )
    threshold: int = Field(description="t: the fewest participants any phase may close with.")
    clip_norm: float = Field(description="C: clip the update to this global L2 norm.")
    max_participants: int = Field(
        description="The encoding's bound on summed inputs: scale = floor((2^31-1) / "
        "(max_participants * C))."
    )
    vector_length: int = Field(description="uint32 words in a masked input.")
    graph: Literal["complete", "harary"] = Field(
        description="Whom participants share keys and masks with: `complete` = every other "
        "one; `harary` = the neighbours on the round's drawn Harary ring (SecAgg+)."
    )
    degree: int | None = Field(
        description="`harary`: k as drawn for this round once the advertisement closed "
        "(each participant has k neighbours); null before the draw and for `complete`."
    )
    neighbour_threshold: int | None = Field(
        description="`harary`: the Shamir threshold within a neighbourhood as drawn; null "
        "before the draw and for `complete` (where `threshold` applies)."
    )
    in_cohort: bool = Field(description="Whether the caller takes part in this round.")
    answered: bool = Field(description="Whether the caller already sent this phase's message.")
    roster: dict[str, Any] | None = Field(
        description="Phases share to unmask, for a participant that advertised: every "
        "advertised participant's keys, sorted by id (Shamir point = position + 1)."
    )
    inbox: dict[str, Any] | None = Field(
        description="Phase masked, for a participant that shared: the ciphertexts addressed to it."
    )
    unmask_request: dict[str, Any] | None = Field(
        description="Phase unmask, for a survivor: who uploaded (survivors) and who dropped."
    )
    survivors: list[str] | None = Field(description="Phase done: whose inputs the sum holds.")
    abort_reason: str | None = Field(description="Phase aborted: why.")
