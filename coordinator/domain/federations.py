"""Federations, participants and model versions: create, enrol, read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal, hash_token, new_token
from coordinator.domain.context import Context
from coordinator.domain.deployment import deployed_version
from coordinator.domain.errors import NotFound
from coordinator.domain.lineage import GENESIS_CHAIN, chain_hash
from coordinator.domain.privacy import PrivacySpent, check_dp_policy, privacy_spent
from coordinator.domain.specs import (
    DeployPolicy,
    ModelSpec,
    PrivacyPolicy,
    RoundPolicy,
    StrategySpec,
    TargetSpec,
)
from coordinator.store.models import Federation, ModelVersion, Participant, Round, utc_now
from coordinator.store.repository import (
    FederationRepository,
    ModelVersionRepository,
    ParticipantRepository,
)
from participant_sdk.wire import encode_weights

__all__ = [
    "MODEL_METADATA",
    "FederationView",
    "create_federation",
    "enrol_participant",
    "get_catalog",
    "get_federation",
    "get_model_version",
    "list_federations",
    "list_model_versions",
    "list_participants",
    "load_federation",
    "open_round",
    "read_version_bytes",
    "reenrol_participant",
    "revoke_participant",
]


# Model bytes carry no version number: the same weights are the same content-addressed blob,
# and the version can be encoded without knowing it (outside the closing transaction).
MODEL_METADATA = {"kind": "model"}


@dataclass
class FederationView:
    row: Federation
    participant_count: int
    deployed_version: int | None

    @property
    def privacy_spent(self) -> PrivacySpent | None:
        """Epsilon spent by the aggregated rounds; None without differential privacy."""
        policy = PrivacyPolicy.model_validate(self.row.privacy)
        return privacy_spent(policy, self.row.completed_rounds)


def initial_weights(spec: ModelSpec) -> dict[str, np.ndarray]:
    """Version 0: small random item factors (seeded), zero biases."""
    rng = np.random.default_rng(spec.seed)
    return {
        "item_factors": (rng.standard_normal((spec.num_items, spec.dim)) * spec.init_scale).astype(
            np.float32
        ),
        "item_bias": np.zeros(spec.num_items, dtype=np.float32),
    }


def open_round(
    session: Session, federation: Federation, *, number: int, base_version: int, now: datetime
) -> Round:
    """Open round ``number`` on ``base_version`` and make it the federation's current round."""
    policy = RoundPolicy.model_validate(federation.round_policy)
    deadline = now + timedelta(seconds=policy.deadline_seconds) if policy.deadline_seconds else None
    round_row = Round(
        federation_id=federation.id,
        number=number,
        state="open",
        base_version=base_version,
        update_count=0,
        opened_at=now,
        deadline_at=deadline,
    )
    session.add(round_row)
    federation.current_round = number
    return round_row


def create_federation(
    ctx: Context,
    *,
    name: str,
    model: ModelSpec,
    strategy: StrategySpec,
    rounds: RoundPolicy,
    catalog: Sequence[str] | None,
    target: TargetSpec | None,
    deploy: DeployPolicy,
    privacy: PrivacyPolicy,
) -> FederationView:
    """Create a federation: store model version 0 and open round 1."""
    check_dp_policy(strategy, privacy)
    weights = encode_weights(initial_weights(model), MODEL_METADATA)
    digest = ctx.blobs.put(weights)
    now = utc_now()
    with ctx.sessions.begin() as session:
        federation = Federation(
            name=name,
            state="active",
            model_spec=model.model_dump(),
            strategy=strategy.model_dump(),
            round_policy=rounds.model_dump(),
            target=target.model_dump() if target else None,
            deploy_policy=deploy.model_dump(),
            privacy=privacy.model_dump(),
            catalog=list(catalog) if catalog is not None else None,
            latest_version=0,
            completed_rounds=0,
            created_at=now,
        )
        session.add(federation)
        session.flush()
        session.add(
            ModelVersion(
                federation_id=federation.id,
                version=0,
                round_number=None,
                parent=None,
                sha256=digest,
                chain_hash=chain_hash(GENESIS_CHAIN, digest, []),
                size=len(weights),
                contributors=[],
                created_at=now,
            )
        )
        open_round(session, federation, number=1, base_version=0, now=now)
    return FederationView(federation, 0, None)


def _view(session: Session, federation: Federation) -> FederationView:
    return FederationView(
        federation,
        ParticipantRepository(session).count(federation.id),
        deployed_version(session, federation.id),
    )


def get_federation(ctx: Context, principal: Principal, federation_id: str) -> FederationView:
    with ctx.read_sessions() as session:
        return _view(session, load_federation(session, principal, federation_id))


def list_federations(ctx: Context, principal: Principal) -> list[FederationView]:
    with ctx.read_sessions() as session:
        ids = None if principal.is_admin else [principal.federation_id or ""]
        return [_view(session, f) for f in FederationRepository(session).list(ids)]


def get_catalog(ctx: Context, principal: Principal, federation_id: str) -> list[str]:
    with ctx.read_sessions() as session:
        return list(load_federation(session, principal, federation_id).catalog or [])


def enrol_participant(
    ctx: Context, principal: Principal, federation_id: str, *, name: str
) -> tuple[Participant, str]:
    """Enrol a participant; return it with its token (the only time the token is shown)."""
    principal.require_admin()
    token = new_token("frp")
    with ctx.sessions.begin() as session:
        load_federation(session, principal, federation_id)
        participant = Participant(
            federation_id=federation_id,
            name=name,
            token_hash=hash_token(ctx.secret_key, token),
            state="active",
            created_at=utc_now(),
        )
        session.add(participant)
    return participant, token


def list_participants(ctx: Context, principal: Principal, federation_id: str) -> list[Participant]:
    principal.require_admin()
    with ctx.read_sessions() as session:
        load_federation(session, principal, federation_id)
        return list(ParticipantRepository(session).list(federation_id))


def get_participant(ctx: Context, principal: Principal, federation_id: str) -> Participant:
    participant_id = principal.require_participant()
    with ctx.read_sessions() as session:
        load_federation(session, principal, federation_id)
        participant = ParticipantRepository(session).get(participant_id)
        if participant is None:
            raise NotFound("participant not found", slug="participant-not-found")
        return participant


def _load_participant(
    session: Session, principal: Principal, federation_id: str, participant_id: str
) -> Participant:
    load_federation(session, principal, federation_id)
    participant = ParticipantRepository(session).get(participant_id)
    if participant is None or participant.federation_id != federation_id:
        raise NotFound(
            f"participant {participant_id} is not enrolled in this federation",
            slug="participant-not-found",
        )
    return participant


def revoke_participant(
    ctx: Context, principal: Principal, federation_id: str, participant_id: str
) -> Participant:
    """Revoke a participant: its token stops working and its open-round update is ignored."""
    principal.require_admin()
    with ctx.sessions.begin() as session:
        participant = _load_participant(session, principal, federation_id, participant_id)
        if participant.state != "revoked":
            participant.state = "revoked"
            participant.revoked_at = utc_now()
    return participant


def reenrol_participant(
    ctx: Context, principal: Principal, federation_id: str, participant_id: str
) -> tuple[Participant, str]:
    """Re-activate a participant with a fresh token (the old one stays invalid)."""
    principal.require_admin()
    token = new_token("frp")
    with ctx.sessions.begin() as session:
        participant = _load_participant(session, principal, federation_id, participant_id)
        participant.state = "active"
        participant.revoked_at = None
        participant.token_hash = hash_token(ctx.secret_key, token)
    return participant, token


def _resolve_version(session: Session, federation: Federation, version: int | str) -> ModelVersion:
    number = federation.latest_version if version == "latest" else version
    row = None
    if isinstance(number, int):
        row = ModelVersionRepository(session).get(federation.id, number)
    if row is None:
        raise NotFound(
            f"model version {version} does not exist; latest is {federation.latest_version}",
            slug="model-version-not-found",
        )
    return row


def get_model_version(
    ctx: Context, principal: Principal, federation_id: str, version: int | str
) -> ModelVersion:
    with ctx.read_sessions() as session:
        federation = load_federation(session, principal, federation_id)
        return _resolve_version(session, federation, version)


def list_model_versions(
    ctx: Context, principal: Principal, federation_id: str
) -> list[ModelVersion]:
    with ctx.read_sessions() as session:
        load_federation(session, principal, federation_id)
        return list(ModelVersionRepository(session).list(federation_id))


def read_version_bytes(ctx: Context, row: ModelVersion) -> bytes:
    """The stored safetensors bytes of a version, byte for byte."""
    return ctx.blobs.get(row.sha256)
