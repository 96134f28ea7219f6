"""History that cannot be rewritten: a hash chain over weights and updates, and a
signed manifest per model version.

Each version's record also names the server optimizer's state stored with it
(``server_state_sha256``, a field added beside the chain, not inside it: the chain hash
keeps its definition). The chain alone uses no key: whoever can write the database can
recompute it. So each version also carries a manifest (every field of the row that
matters, the version number and the count of versions so far, the privacy spent)
signed with the coordinator's Ed25519 key (:mod:`coordinator.domain.signing`), which
the database does not hold. :func:`verify_lineage` checks every signature, that each
row still says what its manifest says, every blob the rows name, and that nothing is
missing after the last version (the federation's head and its closed rounds).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from coordinator.domain.context import Context
from coordinator.store.blobs import BlobNotFound, sha256_hex
from coordinator.store.models import Federation, ModelVersion
from coordinator.store.repository import (
    FederationRepository,
    ModelVersionRepository,
    RoundRepository,
)
from participant_sdk.wire import (
    contributors_digest,
    decode_weights,
    encode_manifest,
    encode_model,
    read_metadata,
)

__all__ = [
    "GENESIS_CHAIN",
    "LineageReport",
    "chain_hash",
    "verify_lineage",
    "version_manifest",
]

GENESIS_CHAIN = "00" * 32


def chain_hash(parent_chain: str, weights_sha256: str, contributors: Iterable[str]) -> str:
    """sha256(parent chain || weights sha256 || sorted contributing update sha256s)."""
    digest = hashlib.sha256(bytes.fromhex(parent_chain))
    digest.update(bytes.fromhex(weights_sha256))
    for update_sha in sorted(contributors):
        digest.update(bytes.fromhex(update_sha))
    return digest.hexdigest()


def version_manifest(
    federation_id: str, row: ModelVersion, *, privacy: Mapping[str, Any] | None
) -> bytes:
    """The canonical manifest of one version (what the coordinator signs).

    ``versions`` (the count so far, version + 1) makes the newest manifest a signed head:
    a deleted newest version leaves rows that disagree with the federation's head.
    ``encodings`` (the sha256 and size of the weights in a compressed encoding) appears
    only for the versions of a federation with one.
    """
    fields: dict[str, Any] = {}
    if row.encodings:
        # only when present: versions without compressed encodings keep their manifests
        fields["encodings"] = row.encodings
    return encode_manifest(
        {
            **fields,
            "federation_id": federation_id,
            "version": row.version,
            "versions": row.version + 1,
            "parent": row.parent,
            "round": row.round_number,
            "sha256": row.sha256,
            "size": row.size,
            "chain_hash": row.chain_hash,
            "server_state_sha256": row.server_state_sha256,
            "contributors": len(row.contributors),
            "contributors_sha256": contributors_digest(row.contributors),
            "created_at": row.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
            "step_scale": float(row.step_scale),
            "restored_from": row.restored_from,
            "privacy_spent": dict(privacy) if privacy is not None else None,
        }
    )


@dataclass
class LineageReport:
    checked: int
    bad_version: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.bad_version is None


def verify_lineage(ctx: Context, federation_id: str) -> LineageReport:
    """Check every version: signature, manifest against the row, parent link, weight
    hash, chain, server state and update blobs; then the head. Report the first problem."""
    with ctx.read_sessions() as session:
        federation = FederationRepository(session).get(federation_id)
        versions = list(ModelVersionRepository(session).list(federation_id))
        closed = RoundRepository(session).result_versions(federation_id)
    parent_chain = GENESIS_CHAIN
    expected_parent: int | None = None
    for checked, row in enumerate(versions):
        if row.version != checked:
            return LineageReport(checked, row.version, f"version {checked} is missing")
        problem = _signature_problem(ctx, federation_id, row)
        if problem is None and row.parent != expected_parent:
            problem = f"parent is {row.parent}, expected {expected_parent}"
        if problem is None:
            try:
                actual = sha256_hex(ctx.blobs.get(row.sha256))
            except BlobNotFound:
                return LineageReport(checked, row.version, "weights blob is missing")
            if actual != row.sha256:
                problem = f"weights sha256 is {actual}, recorded {row.sha256}"
            elif chain_hash(parent_chain, actual, row.contributors) != row.chain_hash:
                problem = "chain hash does not match"
        problem = problem or _encodings_problem(ctx, row)
        problem = problem or _state_problem(ctx, row.server_state_sha256)
        problem = problem or _updates_problem(ctx, row.contributors)
        if problem is not None:
            return LineageReport(checked, row.version, problem)
        parent_chain = row.chain_hash
        expected_parent = row.version
    head = _head_problem(federation, versions, closed) if versions else None
    if head is not None:
        return LineageReport(len(versions), len(versions), head)
    return LineageReport(len(versions))


def _signature_problem(ctx: Context, federation_id: str, row: ModelVersion) -> str | None:
    """Why the version's signed manifest does not vouch for its row; None if it does."""
    if row.manifest is None or row.signature is None:
        return "the version is not signed"
    manifest = row.manifest.encode()
    if not ctx.signer.verify(manifest, row.signature):
        return "the signature does not verify under the coordinator's signing key"
    signed = json.loads(manifest)
    current = json.loads(version_manifest(federation_id, row, privacy=signed.get("privacy_spent")))
    changed = sorted(k for k in signed.keys() | current.keys() if signed.get(k) != current.get(k))
    if changed:
        return "the row differs from its signed manifest: " + ", ".join(changed)
    return None


def _encodings_problem(ctx: Context, row: ModelVersion) -> str | None:
    """Each compressed copy must be the deterministic encoding of the version's float32
    weights (so a signed float16 or int8 download says what the float32 version says)."""
    if not row.encodings:
        return None
    weights = decode_weights(ctx.blobs.get(row.sha256))
    for encoding, entry in sorted(row.encodings.items()):
        try:
            stored = ctx.blobs.get(entry["sha256"])
        except BlobNotFound:
            return f"the {encoding} weights blob is missing"
        if sha256_hex(stored) != entry["sha256"]:
            return f"the {encoding} weights blob was changed"
        if stored != encode_model(weights, encoding, read_metadata(stored)):
            return f"the {encoding} weights are not the encoding of the float32 weights"
    return None


def _updates_problem(ctx: Context, contributors: Iterable[str]) -> str | None:
    """A contributing update's blob whose bytes changed. A missing one is fine: ``fedrec
    gc`` may remove the updates of finished rounds (the manifest still names them)."""
    for digest in contributors:
        try:
            actual = sha256_hex(ctx.blobs.get(digest))
        except BlobNotFound:
            continue
        if actual != digest:
            return f"update blob {digest} was changed (its sha256 is now {actual})"
    return None


def _head_problem(
    federation: Federation | None, versions: list[ModelVersion], closed: list[int]
) -> str | None:
    """The newest signed version must be the federation's head, and every closed round's
    version must exist: otherwise versions were deleted from the end."""
    if federation is None:
        return "the federation row is missing"
    last = versions[-1].version
    if federation.latest_version != last:
        return (
            f"the federation's head is version {federation.latest_version} but the newest "
            f"version is {last}: versions were deleted"
        )
    missing = sorted(v for v in closed if v > last)
    if missing:
        return f"closed rounds produced versions {missing}, which are missing"
    return None


def _state_problem(ctx: Context, recorded: str | None) -> str | None:
    """Why the recorded server-state blob does not check out; None if it does (or none)."""
    if recorded is None:
        return None
    try:
        actual = sha256_hex(ctx.blobs.get(recorded))
    except BlobNotFound:
        return "server state blob is missing"
    if actual != recorded:
        return f"server state sha256 is {actual}, recorded {recorded}"
    return None
