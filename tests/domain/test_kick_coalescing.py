"""Kicks of one round coalesce on the worker: while one is queued and not started, the
kicks of uploads that commit meanwhile add no run (the queued one reads after them); a
kick that arrives once the run started queues another, so no upload goes unread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from coordinator.domain import aggregation_job
from coordinator.domain.context import Context
from coordinator.domain.lifecycle import Step, Trigger
from coordinator.worker import RoundWorker


def test_kicks_queued_together_run_once_and_a_later_kick_runs_again(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[tuple[str, int]] = []
    started, release = threading.Event(), threading.Event()

    def run(_ctx: Context, federation_id: str, number: int, **kwargs: Any) -> Any:
        assert kwargs["trigger"] is Trigger.UPLOAD
        runs.append((federation_id, number))
        started.set()
        assert release.wait(10)
        return aggregation_job.Outcome(Step.WAIT)

    monkeypatch.setattr(aggregation_job, "run", run)
    worker = RoundWorker(ctx)
    try:
        blocker = worker.kick("f", 1)  # starts, and holds the worker's one thread
        assert blocker is not None
        assert started.wait(10)
        # queued behind it: the first of each round is kept, the repeats coalesce
        queued = [worker.kick("f", 2), worker.kick("f", 2), worker.kick("g", 2)]
        queued += [worker.kick("f", 2) for _ in range(5)]
        assert queued[0] is not None
        assert queued[2] is not None
        assert queued[1] is None
        assert all(k is None for k in queued[3:])
        # round 1's run started, so an upload committed now is not covered by it
        again = worker.kick("f", 1)
        assert again is not None
        release.set()
        for future in (blocker, queued[0], queued[2], again):
            future.result(timeout=10)
    finally:
        release.set()
        worker.stop()
    assert sorted(runs) == [("f", 1), ("f", 1), ("f", 2), ("g", 2)]
