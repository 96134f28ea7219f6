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
