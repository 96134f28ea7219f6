"""Model versions: the chained record of every global model, and their bytes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import NotFound
from coordinator.domain.lineage import GENESIS_CHAIN, chain_hash, version_manifest
from coordinator.domain.privacy import accounting_of
from coordinator.domain.served_versions import ServedVersion
from coordinator.domain.signing import LineageSigner
from coordinator.domain.transport import default_encoding, offered_encodings, version_blob
from coordinator.store.models import Federation, ModelVersion
from coordinator.store.repository import ModelVersionRepository

__all__ = [
    "MODEL_METADATA",
    "get_model_version",
    "list_model_versions",
    "read_version_bytes",
    "record_version",
    "serve_new_version",
    "VersionLink",
]

# Model bytes carry no version number: the same weights are the same content-addressed blob,
# and the version can be encoded without knowing it (outside the closing transaction).
MODEL_METADATA = {"kind": "model"}


@dataclass(frozen=True)
class VersionLink:
    """What a new version chains to: its parent's number and chain hash."""

    version: int
    chain_hash: str


def record_version(
    session: Session,
    federation: Federation,
    *,
    parent: ModelVersion | VersionLink | None,
    round_number: int | None,
    sha256: str,
    size: int,
    contributors: Sequence[str],
    server_state_sha256: str | None = None,
    step_scale: float = 1.0,
    restored_from: int | None = None,
    encodings: Mapping[str, Any] | None = None,
    clip_norms: tuple[float, float] | None = None,
    now: datetime,
    signer: LineageSigner,
) -> ModelVersion:
    """Add the federation's next version, chained to ``parent`` (None: version 0), with
    its manifest signed by the coordinator's lineage key. ``encodings`` names the
    weights stored in the federation's compressed encoding (``transport.encode_version``);
    the manifest signs them too. ``clip_norms`` (adaptive clipping: the C the round used,
    the C it hands on) join the privacy record, signed with it.

    Call it after the round is counted (``lifecycle.close``): the manifest records the
    privacy spent by every aggregated round up to this version.
    """
    number = 0 if parent is None else federation.latest_version + 1
    row = ModelVersion(
        federation_id=federation.id,
        version=number,
        round_number=round_number,
        parent=parent.version if parent else None,
        sha256=sha256,
        chain_hash=chain_hash(parent.chain_hash if parent else GENESIS_CHAIN, sha256, contributors),
        size=size,
        contributors=sorted(contributors),
        server_state_sha256=server_state_sha256,
        step_scale=step_scale,
        restored_from=restored_from,
        encodings=dict(encodings) if encodings else None,
        created_at=now,
    )
    # computed once, here (the aggregation warmed the accountant's cache outside the
    # lock), stored with the version and signed in its manifest
    accounting = accounting_of(session, federation)
    spent = accounting.spent(federation.completed_rounds) if accounting else None
    if spent is not None and clip_norms is not None:
        spent = dataclasses.replace(spent, clip_norm=clip_norms[0], next_clip_norm=clip_norms[1])
    row.privacy_spent = spent.as_record() if spent is not None else None
    manifest = version_manifest(federation.id, row, privacy=row.privacy_spent)
    row.manifest = manifest.decode()
    row.signature = signer.sign(manifest)
    ModelVersionRepository(session).insert(row)
    federation.latest_version = number
    return row


def resolve_version(session: Session, federation: Federation, version: int | str) -> ModelVersion:
    """A version by number, or ``"latest"``; 404 if it does not exist."""
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
    """One version's record (number, parent, hashes, contributors)."""
    with ctx.read_sessions() as session:
        federation = load_federation(session, principal, federation_id)
        return resolve_version(session, federation, version)


def list_model_versions(
    ctx: Context, principal: Principal, federation_id: str
) -> list[ModelVersion]:
    """Every version of the federation, oldest first."""
    with ctx.read_sessions() as session:
        load_federation(session, principal, federation_id)
        return list(ModelVersionRepository(session).list(federation_id))


def cached_served_version(
    ctx: Context, principal: Principal, federation_id: str, version: int | str
) -> ServedVersion | None:
    """A numbered version this process served before (no I/O: its record never
    changes); None: ask :func:`served_version`."""
    if not isinstance(version, int):
        return None
    cached = ctx.served_versions.record(federation_id, version)
    if cached is not None:
        principal.check_federation(federation_id)  # it exists: 403 as a read would
    return cached


def served_version(
    ctx: Context, principal: Principal, federation_id: str, version: int | str
) -> ServedVersion:
    """What a download of this version serves (cached for the next download)."""
    cached = cached_served_version(ctx, principal, federation_id, version)
    if cached is not None:
        return cached
    row = get_model_version(ctx, principal, federation_id, version)
    served = _served(row)
    ctx.served_versions.remember(federation_id, served)
    return served


def _served(row: ModelVersion) -> ServedVersion:
    return ServedVersion(
        version=row.version,
        blobs={name: version_blob(row, name) for name in offered_encodings(row)},
        default_encoding=default_encoding(row),
        manifest=row.manifest,
        signature=row.signature,
    )


def serve_new_version(ctx: Context, row: ModelVersion, weights: bytes) -> None:
    """Hand a version that just committed, and its float32 weights, to this process's
    cache of served versions: the round's participants download it at once, and the
    aggregation of the next round reads it as its base, without a database read."""
    ctx.served_versions.remember(row.federation_id, _served(row))
    ctx.served_versions.keep(row.sha256, weights)


def cached_bytes(ctx: Context, sha256: str) -> bytes | None:
    """A version's weights if this process holds them (no I/O)."""
    return ctx.served_versions.cached_weights(sha256)


def served_bytes(ctx: Context, sha256: str) -> bytes:
    """A version's weights by sha256, from this process's cache when they are there."""
    return ctx.served_versions.weights(sha256, ctx.blobs.get)


def read_version_bytes(ctx: Context, row: ModelVersion, encoding: str = "float32") -> bytes:
    """The stored safetensors bytes of a version in ``encoding``, byte for byte (422 when
    the version is not served in it)."""
    return ctx.blobs.get(version_blob(row, encoding)[0])
