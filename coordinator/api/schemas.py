"""Request and response schemas of the REST API (v1), named by role."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coordinator.domain.specs import (
    DeployPolicy,
    ModelSpec,
    PrivacyPolicy,
    RoundPolicy,
    StrategySpec,
    TargetSpec,
)


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RequestSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FederationCreate(RequestSchema):
    name: str = Field(min_length=1, max_length=200)
    model: ModelSpec
    strategy: StrategySpec = StrategySpec()
    rounds: RoundPolicy = RoundPolicy()
    catalog: list[str] | None = Field(
        default=None,
        description="External item ids (num_items of them); row i of the model is catalog[i].",
    )
    target: TargetSpec | None = None
    deploy: DeployPolicy = DeployPolicy()
    privacy: PrivacyPolicy = PrivacyPolicy()

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
    epsilon: float | None = Field(
        description=(
            "Epsilon spent at `delta` (RDP accountant, every participant in every round); "
            "null = unbounded: noise_multiplier 0 clips without a privacy guarantee."
        )
    )
    delta: float
    rounds: int = Field(description="Aggregated (noisy) rounds so far.")


class Federation(Schema):
    id: str
    name: str
    state: Literal["active", "evaluating", "completed"] = Field(
        description="`evaluating`: training stopped; waiting for the final version's "
        "validation figures (no round is open)."
    )
    model: ModelSpec
    strategy: StrategySpec
    rounds: RoundPolicy
    target: TargetSpec | None
    deploy: DeployPolicy
    privacy: PrivacyPolicy
    privacy_spent: PrivacySpent | None = Field(
        description="Differential privacy spent so far; null without `privacy.dp`."
    )
    current_round: int | None = Field(
        description="Open round number; null once evaluating or completed."
    )
    latest_version: int
    deployed_version: int | None
    participant_count: int
    created_at: datetime


class FederationList(Schema):
    items: list[Federation]


class Catalog(Schema):
    items: list[str]


class ParticipantCreate(RequestSchema):
    name: str = Field(min_length=1, max_length=200)


class Participant(Schema):
    id: str
    name: str
    state: Literal["active", "revoked"]
    created_at: datetime
    token_expires_at: datetime | None = Field(
        default=None,
        description="When the current token stops working (refresh it before: POST "
        "…/participants/me/token); null for tokens issued before expiry existed.",
    )


class EnrolledParticipant(Participant):
    token: str = Field(description="Bearer token of this participant; shown only once.")


class ParticipantList(Schema):
    items: list[Participant]


class Round(Schema):
    number: int
    state: Literal["open", "aggregating", "closed", "failed"]
    base_version: int
    update_count: int
    result_version: int | None
    opened_at: datetime
    closed_at: datetime | None
    deadline_at: datetime | None


class RoundList(Schema):
    items: list[Round]


class Receipt(Schema):
    update_id: str
    round: int
    sha256: str
    size: int
    num_examples: int
    received_at: datetime


class ModelVersion(Schema):
    version: int
    round: int | None
    parent: int | None
    sha256: str
    chain_hash: str
    size: int
    created_at: datetime
    contributors: list[str]
    step_scale: float = Field(
        description="Scale of the server step that made this version: 1, or less once the "
        "coordinator backed off a diverging federation (non-finite weights or a validation "
        "collapse); the next round inherits it."
    )
    restored_from: int | None = Field(
        description="Set when a validation collapse was undone: the best validated version "
        "whose weights this version carries (its parent is still the previous version)."
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


class SigningKey(Schema):
    algorithm: Literal["Ed25519"] = Field(description="The signature algorithm.")
    public_key: str = Field(description="The raw 32-byte public key, base64: pin it.")
    key_id: str = Field(description="sha256 of the raw public key, first 16 hex digits.")


class AuditEvent(Schema):
    seq: int = Field(description="Position in the chain, from 1; page with `?after=`.")
    created_at: datetime
    actor: str = Field(
        description="`admin`, `participant:<id>`, `coordinator`, `policy:<name>` or "
        "`anonymous` (a token nobody holds)."
    )
    action: str = Field(
        description="enrol, revoke, reenrol, upload, aggregate, round-failed, stop, "
        "budget-refusal, auto, promote, rollback, auth-failure."
    )
    federation_id: str | None
    subject: str | None = Field(description="What it acted on: a participant id, a round.")
    outcome: str = Field(description="`ok`, `refused` or `failed`.")
    detail: dict[str, Any] = Field(
        description="Small facts (digests, counts, the problem slug); never a token or tensor."
    )
    prev_hash: str
    hash: str = Field(description="HMAC-SHA256 under the audit key of prev_hash and the event.")


class AuditEventList(Schema):
    items: list[AuditEvent]


class ModelVersionList(Schema):
    items: list[ModelVersion]


class EvaluationCreate(RequestSchema):
    split: Literal["validation", "test"]
    metrics: dict[str, float] = Field(
        description="Metric name (e.g. `ndcg@10`) to value in [0, 1].", min_length=1
    )
    num_users: int = Field(gt=0, description="Users evaluated; the weight of these figures.")

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
    version: int
    split: str
    metrics: dict[str, float]
    num_users: int
    participant_id: str
    created_at: datetime


class MetricsRow(Schema):
    version: int
    round: int | None
    split: str
    metrics: dict[str, float]
    num_users: int
    participants: int


class MetricsHistory(Schema):
    items: list[MetricsRow]


class DeploymentCreate(RequestSchema):
    version: int = Field(ge=0)


class DeploymentEvent(Schema):
    version: int
    actor: str
    reason: str
    metric_value: float | None
    created_at: datetime


class Deployment(Schema):
    version: int
    policy: str
    deployed_at: datetime
    deployed_by: str
    history: list[DeploymentEvent]


class Health(Schema):
    status: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:fedrec:problem:round-closed"])
    title: str
    status: int
    detail: str
    instance: str | None = None


def federation_out(view: Any) -> Federation:
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
        privacy_spent=PrivacySpent.model_validate(spent) if (spent := view.privacy_spent) else None,
        current_round=row.current_round,
        latest_version=row.latest_version,
        deployed_version=view.deployed_version,
        participant_count=view.participant_count,
        created_at=row.created_at,
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
