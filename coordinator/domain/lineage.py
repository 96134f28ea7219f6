"""Tamper-evident lineage of model versions: a hash chain over weights and updates."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from coordinator.domain.context import Context
from coordinator.store.blobs import BlobNotFound, sha256_hex
from coordinator.store.repository import ModelVersionRepository

__all__ = ["GENESIS_CHAIN", "LineageReport", "chain_hash", "verify_lineage"]

GENESIS_CHAIN = "00" * 32


def chain_hash(parent_chain: str, weights_sha256: str, contributors: Iterable[str]) -> str:
    """sha256(parent chain || weights sha256 || sorted contributing update sha256s)."""
    digest = hashlib.sha256(bytes.fromhex(parent_chain))
    digest.update(bytes.fromhex(weights_sha256))
    for update_sha in sorted(contributors):
        digest.update(bytes.fromhex(update_sha))
    return digest.hexdigest()


@dataclass
class LineageReport:
    checked: int
    bad_version: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.bad_version is None


def verify_lineage(ctx: Context, federation_id: str) -> LineageReport:
    """Recompute every version's weight hash and chain; report the first mismatch."""
    with ctx.read_sessions() as session:
        versions = ModelVersionRepository(session).list(federation_id)
    parent_chain = GENESIS_CHAIN
    expected_parent: int | None = None
    for checked, row in enumerate(versions):
        if row.parent != expected_parent:
            return LineageReport(
                checked, row.version, f"parent is {row.parent}, expected {expected_parent}"
            )
        try:
            data = ctx.blobs.get(row.sha256)
        except BlobNotFound:
            return LineageReport(checked, row.version, "weights blob is missing")
        actual = sha256_hex(data)
        if actual != row.sha256:
            return LineageReport(
                checked, row.version, f"weights sha256 is {actual}, recorded {row.sha256}"
            )
        expected_chain = chain_hash(parent_chain, actual, row.contributors)
        if expected_chain != row.chain_hash:
            return LineageReport(checked, row.version, "chain hash does not match")
        parent_chain = row.chain_hash
        expected_parent = row.version
    return LineageReport(len(versions))
