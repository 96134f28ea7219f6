"""bench.upload_cpu --dense and bench.peers.coordinator_cpu run end to end (no figures
asserted)."""

from __future__ import annotations

import pytest

from bench.peers import coordinator_cpu
from bench.upload_cpu import run


def test_dense_uploads_complete() -> None:
    # each PUT raises on a non-2xx answer: completing means every dense update was taken
    figures = run(2, dense=True)
    assert set(figures) == {"request", "submit_update", "kick"}
    assert figures["submit_update"] > 0.0


def test_coordinator_cpu_alternates_trees(capsys: pytest.CaptureFixture[str]) -> None:
    # this checkout twice, as two "trees": one table row each, one CPU figure per run
    assert coordinator_cpu.main(["--cases", "2:40", "--rounds", "3", "--pairs", "1",
                                 "--source", ".", "--source", "."]) == 0  # fmt: skip
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 |")]
    assert len(rows) == 2
