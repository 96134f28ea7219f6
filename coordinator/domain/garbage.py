"""Blob garbage collection: remove blobs no database row needs any more, on any blob store.

Orphans come from an upload refused after its bytes were stored (the round closed, a
conflicting duplicate), from a crash between a blob write and its commit, and from
temporary files of a write cut short (local store). Optionally the update bytes of closed and failed
rounds go too: aggregation was their only reader, and the rows keep their sha256 for
the lineage. Model version weights are never removed.

Only blobs last stored before a grace period are candidates, so an upload or
aggregation that stored its bytes but has not committed yet, here or on another
coordinator process, keeps them (see :meth:`BlobStore.remove_stale`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from coordinator.domain.context import Context
from coordinator.store.repository import referenced_blobs

__all__ = ["GarbageReport", "collect_garbage"]


@dataclass
class GarbageReport:
    """What one collection found; with ``dry_run`` nothing was removed."""

    dry_run: bool
    kept: int = 0  # referenced by a row
    recent: int = 0  # unreferenced but inside the grace period
    removed: int = 0
    removed_bytes: int = 0


def collect_garbage(
    ctx: Context,
    *,
    grace_seconds: float = 24 * 3600.0,
    keep_finished_updates: bool = True,
    dry_run: bool = False,
) -> GarbageReport:
    """Remove unreferenced blobs older than ``grace_seconds``."""
    if grace_seconds < 0:
        raise ValueError("grace_seconds must be >= 0")
    # the cut-off is taken before reading the rows: a blob stored after it is "recent"
    older_than = time.time() - grace_seconds
    with ctx.read_sessions() as session:
        needed = referenced_blobs(session, updates_of_finished_rounds=keep_finished_updates)
    report = GarbageReport(dry_run=dry_run)
    for item in ctx.blobs.scan():
        if item.digest in needed:
            report.kept += 1
        elif item.mtime >= older_than:
            report.recent += 1
        elif dry_run or ctx.blobs.remove_stale(item, older_than):
            report.removed += 1
            report.removed_bytes += item.size
        else:
            report.recent += 1  # re-stored while we looked
    return report
