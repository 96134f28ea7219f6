"""bench.secagg runs end to end on a tiny grid and reports sums and aborts honestly."""

from __future__ import annotations

import pytest

from bench import secagg


def test_prints_one_row_per_cell_with_the_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    assert secagg.main(["--sizes", "4", "6", "--dropouts", "0", "0.5", "--length", "8"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "|" in line][1:]
    assert len(rows) == 4
    # a majority threshold survives 0 % dropouts and aborts when half drop before uploading
    assert "sum of 4" in rows[0]
    assert "aborted" in rows[1]
    assert "sum of 6" in rows[2]
    assert "aborted" in rows[3]


def test_dropouts_after_the_upload_still_count(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--sizes", "6", "--dropouts", "0.34", "0.5", "--length", "8", "--when", "after-upload"]
    assert secagg.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "|" in line][1:]
    # two uploaded their masked input and left: their inputs count, the 4 left unmask
    assert len(rows) == 2
    assert "sum of 6" in rows[0]
    # three left: fewer than the threshold 4 answer the unmask request
    assert "aborted" in rows[1]
    assert "goal" not in out  # no 50-participant cell in this grid


def test_the_sparse_graph_runs_beside_the_complete_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--sizes", "12", "--dropouts", "0", "--length", "8", "--graphs", "complete", "harary"]
    assert secagg.main([*argv, "--degree", "4"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "|" in line][1:]
    assert len(rows) == 2
    # the same inputs: both sum all 12; the sparse graph's participants have 4 neighbours
    assert "complete  11" in rows[0]
    assert "harary   4" in rows[1]
    assert all("sum of 12" in row for row in rows)
