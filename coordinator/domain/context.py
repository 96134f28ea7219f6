"""What domain services need from the outside world, passed explicitly."""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from coordinator.domain.cohort_cache import CohortCache, drawn_reader
from coordinator.domain.observer import NoObserver, Observer
from coordinator.domain.open_rounds import OpenRounds
from coordinator.domain.recent_updates import RecentUpdates
from coordinator.domain.round_notifier import RoundNotifier, database_marks
from coordinator.domain.round_snapshots import RoundSnapshots
from coordinator.domain.served_versions import ServedVersions
from coordinator.domain.signing import LineageSigner
from coordinator.domain.token_cache import TokenCache
from coordinator.store.blobs import BlobStore
from coordinator.store.db import create_unsynced_session_factory
from coordinator.store.group_commit import GroupCommit
from coordinator.store.repository import FederationRepository, RoundRepository

__all__ = ["Context"]

# Test-only (documented in docs/architecture.md): the fault tests pause a real
# coordinator between storing a batch of uploads and committing it, to kill it there.
TEST_GROUP_COMMIT_PAUSE_ENV = "FEDREC_TEST_GROUP_COMMIT_PAUSE_SECONDS"


def _test_pause() -> None:
    seconds = float(os.environ.get(TEST_GROUP_COMMIT_PAUSE_ENV) or 0)
    if seconds > 0:
        logging.getLogger("fedrec.rounds").warning(
            "test hook: pausing %.1fs before committing uploads (%s)",
            seconds,
            TEST_GROUP_COMMIT_PAUSE_ENV,
        )
        time.sleep(seconds)


@dataclass
class Context:
    """Session factories, blob store and identity of this coordinator process."""

    # ``sessions.begin()`` for work that writes (or reads, then writes); ``read_sessions()``
    # for read-only work, which on SQLite does not queue for the write lock
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    blobs: BlobStore
    secret_key: bytes  # keys the token hashes only
    # keyed hash of the bootstrap admin token (FEDREC_ADMIN_TOKEN or data_dir/admin_token):
    # registered as an admin_tokens row at the first start with it (domain/auth.py)
    bootstrap_token_hash: str
    signer: LineageSigner  # signs model-version manifests; a separate secret
    audit_key: bytes  # keys the audit log's chain (domain/audit.py); a separate secret
    lease_seconds: float = 300.0
    # how long an Idempotency-Key's record answers replays (FEDREC_IDEMPOTENCY_TTL_SECONDS)
    idempotency_ttl_seconds: float = 86_400.0
    token_ttl_seconds: float = 30 * 24 * 3600.0  # participant tokens expire
    admin_token_ttl_seconds: float = 30 * 24 * 3600.0  # admin tokens too (default lifetime)
    token_grace_seconds: float = 300.0  # a replaced token still works this long
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # parsed federation settings by federation id (immutable once created)
    settings_cache: dict[str, Any] = field(default_factory=dict)
    # told when rounds open, close and fail (metrics); nothing by default
    observer: Observer = field(default_factory=NoObserver)
    # wakes long-polls; one per process (build_context configures it from the settings)
    notifier: RoundNotifier = field(default_factory=RoundNotifier)
    # uploads arriving together share one write transaction and one commit (built below)
    upload_commits: GroupCommit[tuple[str, int]] | None = None
    # the same for evaluation reports (keyed by federation) and Idempotency-Key records
    evaluation_commits: GroupCommit[str] | None = None
    record_commits: GroupCommit[str] | None = None
    # drawn cohorts of recent rounds, read once for every long-poll of the process
    cohort_cache: CohortCache = field(default_factory=CohortCache)
    # each federation's last round read: a long-poll renewal under an unmoved mark reuses it
    round_snapshots: RoundSnapshots = field(default_factory=RoundSnapshots)
    # authenticated tokens (digest -> principal) for a few seconds; revocations reach it
    # through the database's auth_generation counter (domain/token_cache.py)
    principals: TokenCache[Any] = field(default_factory=TokenCache)
    # what weights downloads serve: version records and bytes (immutable once recorded)
    served_versions: ServedVersions = field(default_factory=ServedVersions)
    # the bytes of updates this process accepted, until their round aggregates: the job
    # reads them from memory instead of the blob store (content-addressed, bounded)
    recent_updates: RecentUpdates = field(default_factory=RecentUpdates)
    # the id and base of unsampled rounds an upload found open: the next uploads to the
    # round skip the read of them (immutable once the round opened; domain/open_rounds.py)
    open_rounds: OpenRounds = field(default_factory=OpenRounds)
    # write sessions whose COMMIT does not wait for its fsync: only the aggregation claim,
    # whose loss the lease repairs (built from ``sessions`` when not given)
    unsynced_sessions: sessionmaker[Session] | None = None
    # blobs up to this size are written as rows of the transaction that records them
    # (store.database_blobs.store_in), durable with its one COMMIT; 0: always ``blobs.put``.
    # Only where ``blobs`` reads those rows (local: FilesAndRows; postgres)
    inline_blob_max_bytes: int = 0
    # ease: the solve of a catalog this large or larger runs in a child process (the GIL
    # stays free: domain/ease_process.py), its arrays as files under scratch_dir (None:
    # the system's temporary directory), stopped past the timeout; a federation whose
    # solve would need more memory than the budget is refused at creation (None: no check)
    ease_subprocess_min_items: int = 1_000
    ease_solve_timeout_seconds: float = 4 * 3600.0
    ease_memory_budget_bytes: int | None = None
    scratch_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.upload_commits is None:
            self.upload_commits = GroupCommit(
                self.sessions,
                lock_first=lambda session, keys: RoundRepository(session).lock_in_order(keys),
                before_commit=_test_pause,
            )
        if self.evaluation_commits is None:
            self.evaluation_commits = GroupCommit(
                self.sessions,
                lock_first=lambda session, ids: FederationRepository(session).lock_in_order(ids),
            )
        if self.record_commits is None:
            self.record_commits = GroupCommit(self.sessions)
        if self.unsynced_sessions is None:
            self.unsynced_sessions = create_unsynced_session_factory(self.sessions)
        if self.notifier.read_marks is None:
            self.notifier.read_marks = database_marks(self.read_sessions)
        if self.notifier.cohort_of is None:
            self.notifier.cohort_of = drawn_reader(self.cohort_cache, self.read_sessions)
        if self.notifier.snapshots is None:
            # a round this process opened reaches its woken long-polls without a read
            self.notifier.snapshots = self.round_snapshots
