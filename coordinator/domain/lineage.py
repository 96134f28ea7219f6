"""Tamper-evident lineage of model versions: a hash chain over weights and updates.

Each version's record also names the server optimizer's state stored with it
(``server_state_sha256``, a field added beside the chain, not inside it: the chain hash
keeps its definition). Verification checks that blob too.
"""

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
    """Recompute every version's weight hash and chain, and the hash of its recorded
    server state; report the first mismatch."""
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
        state_problem = _state_problem(ctx, row.server_state_sha256)
        if state_problem is not None:
            return LineageReport(checked, row.version, state_problem)
        parent_chain = row.chain_hash
        expected_parent = row.version
    return LineageReport(len(versions))


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
