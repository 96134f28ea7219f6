"""Federations: create, read, list; their settings parsed once per process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from coordinator.domain import lifecycle
from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.deployment import deployed_version
from coordinator.domain.ease_strategy import check_ease_federation
from coordinator.domain.errors import NotFound
from coordinator.domain.model_versions import MODEL_METADATA, record_version
from coordinator.domain.privacy import Accounting, PrivacySpent, check_dp_policy
from coordinator.domain.sampling import check_sampling
from coordinator.domain.secure_rounds import check_secure_aggregation
from coordinator.domain.specs import (
    DeployPolicy,
    LimitsPolicy,
    ModelSpec,
    PrivacyPolicy,
    RoundPolicy,
    StrategySpec,
    TargetSpec,
    TransportPolicy,
)
from coordinator.domain.strategy import check_aggregator
from coordinator.domain.transport import check_transport, encode_version
from coordinator.store.models import Federation, utc_now
from coordinator.store.repository import (
    FederationRepository,
    ModelVersionRepository,
    ParticipantRepository,
)
from participant_sdk.wire import TensorSpec, encode_weights

__all__ = [
    "FederationSettings",
    "FederationView",
    "create_federation",
    "federation_settings",
    "federation_settings_by_id",
    "get_catalog",
    "get_federation",
    "list_federations",
]


@dataclass(frozen=True)
class FederationSettings:
    """What a federation was created with; never changes afterwards, so it is cached."""

    model: ModelSpec
    strategy: StrategySpec
    rounds: RoundPolicy
    privacy: PrivacyPolicy
    limits: LimitsPolicy
    transport: TransportPolicy
    tensors: dict[str, TensorSpec]
    update_tensors: dict[str, TensorSpec]

    @classmethod
    def of(cls, federation: Federation) -> FederationSettings:
        model = ModelSpec.model_validate(federation.model_spec)
        return cls(
            model=model,
            strategy=StrategySpec.model_validate(federation.strategy),
            rounds=RoundPolicy.model_validate(federation.round_policy),
            privacy=PrivacyPolicy.model_validate(federation.privacy),
            limits=LimitsPolicy.model_validate(federation.limits or {}),
            transport=TransportPolicy.model_validate(federation.transport or {}),
            tensors=model.tensors(),
            update_tensors=model.update_tensors(),
        )


def federation_settings(ctx: Context, federation: Federation) -> FederationSettings:
    """The federation's settings, parsed once per process (they never change)."""
    cached = ctx.settings_cache.get(federation.id)
    if isinstance(cached, FederationSettings):
        return cached
    settings = FederationSettings.of(federation)
    if len(ctx.settings_cache) >= 10_000:  # bounded: drop everything, it is only a cache
        ctx.settings_cache.clear()
    ctx.settings_cache[federation.id] = settings
    return settings


def federation_settings_by_id(
    ctx: Context, session: Session, federation_id: str
) -> FederationSettings:
    """:func:`federation_settings` of a federation the caller knows exists, read from
    ``session`` only the first time in this process (ids are never reused)."""
    cached = ctx.settings_cache.get(federation_id)
    if isinstance(cached, FederationSettings):
        return cached
    federation = FederationRepository(session).get(federation_id)
    if federation is None:
        raise NotFound(f"federation {federation_id} does not exist", slug="federation-not-found")
    return federation_settings(ctx, federation)


@dataclass
class FederationView:
    row: Federation
    participant_count: int
    deployed_version: int | None
    # what the latest version recorded (model_versions.privacy_spent)
    latest_privacy: Mapping[str, Any] | None = None

    @property
    def privacy_spent(self) -> PrivacySpent | None:
        """Epsilon spent by the aggregated rounds, as the latest version recorded it;
        None without differential privacy."""
        policy = PrivacyPolicy.model_validate(self.row.privacy)
        if policy.dp is None:
            return None
        stored = self.latest_privacy
        if stored is not None and stored.get("rounds") == self.row.completed_rounds:
            return PrivacySpent.from_record(stored)
        # a version recorded before 0009 (or a view built without it): recompute
        return Accounting(
            policy.dp, RoundPolicy.model_validate(self.row.round_policy).sampling
        ).spent(self.row.completed_rounds)


def initial_weights(spec: ModelSpec) -> dict[str, np.ndarray]:
    """Version 0: small random item factors (seeded), zero biases; ``ease``: B = 0 (its
    tensors, dense or pruned, all zero)."""
    if spec.kind == "ease":
        return {name: np.zeros(t.shape, dtype=np.float32) for name, t in spec.tensors().items()}
    rng = np.random.default_rng(spec.seed)
    return {
        "item_factors": (rng.standard_normal((spec.num_items, spec.dim)) * spec.init_scale).astype(
            np.float32
        ),
        "item_bias": np.zeros(spec.num_items, dtype=np.float32),
    }


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
    limits: LimitsPolicy | None = None,
    transport: TransportPolicy | None = None,
) -> FederationView:
    """Create a federation: store model version 0 and open round 1."""
    transport = transport or TransportPolicy()
    check_dp_policy(strategy, privacy, rounds.sampling)
    check_sampling(model, rounds)
    check_ease_federation(model, privacy, memory_budget_bytes=ctx.ease_memory_budget_bytes)
    check_aggregator(model, strategy, privacy)
    check_secure_aggregation(model, strategy, privacy)
    # secure aggregation refuses compression: its masked updates have their own
    # fixed-point encoding
    check_transport(model, transport, secure_aggregation=privacy.secure_aggregation is not None)
    tensors = initial_weights(model)
    weights = encode_weights(tensors, MODEL_METADATA)
    digest = ctx.blobs.put(weights)
    encodings = encode_version(ctx, tensors, transport, MODEL_METADATA)
    now = utc_now()
    with ctx.sessions.begin() as session:
        federation = Federation(
            name=name,
            state=lifecycle.FederationState.ACTIVE,
            model_spec=model.model_dump(),
            strategy=strategy.model_dump(),
            round_policy=rounds.model_dump(),
            target=target.model_dump() if target else None,
            deploy_policy=deploy.model_dump(),
            privacy=privacy.model_dump(),
            limits=(limits or LimitsPolicy()).model_dump(),
            # null for float32: a default federation's row reads as before
            transport=transport.model_dump() if transport.encoding != "float32" else None,
            catalog=list(catalog) if catalog is not None else None,
            latest_version=0,
            completed_rounds=0,
            created_at=now,
        )
        session.add(federation)
        session.flush()
        record_version(
            session,
            federation,
            parent=None,
            round_number=None,
            sha256=digest,
            size=len(weights),
            contributors=[],
            encodings=encodings,
            now=now,
            signer=ctx.signer,
        )
        lifecycle.open_round(session, federation, number=1, base_version=0, now=now)
    ctx.observer.round_opened()
    return FederationView(federation, 0, None)


def _view(session: Session, federation: Federation) -> FederationView:
    return FederationView(
        federation,
        ParticipantRepository(session).count(federation.id),
        deployed_version(session, federation.id),
        latest_privacy_of(session, federation),
    )


def latest_privacy_of(session: Session, federation: Federation) -> Mapping[str, Any] | None:
    """The privacy spent that the federation's latest version recorded (None: no DP)."""
    if federation.privacy.get("dp") is None:
        return None
    latest = ModelVersionRepository(session).get(federation.id, federation.latest_version)
    return latest.privacy_spent if latest is not None else None


def get_federation(ctx: Context, principal: Principal, federation_id: str) -> FederationView:
    """One federation with its participant count and deployed version."""
    with ctx.read_sessions() as session:
        return _view(session, load_federation(session, principal, federation_id))


def list_federations(ctx: Context, principal: Principal) -> list[FederationView]:
    """The federations the caller may see (a participant: its own)."""
    with ctx.read_sessions() as session:
        ids = None if principal.is_admin else [principal.federation_id or ""]
        return [_view(session, f) for f in FederationRepository(session).list(ids)]


def get_catalog(ctx: Context, principal: Principal, federation_id: str) -> list[str]:
    """The federation's item ids, in row order (empty: rows are the item ids)."""
    with ctx.read_sessions() as session:
        return list(load_federation(session, principal, federation_id).catalog or [])
