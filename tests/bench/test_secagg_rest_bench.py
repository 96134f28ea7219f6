"""bench.secagg_rest end to end on a tiny model: every honest participant is summed."""

from __future__ import annotations

import pytest

from bench import secagg_rest


@pytest.mark.slow
def test_a_tiny_round_sums_every_honest_participant(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--sizes", "4", "--dropouts", "0", "0.25", "--items", "6", "--dim", "2"]
    assert secagg_rest.main([*args, "--phase-seconds", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "summed" in line]
    assert len(rows) == 2
    assert rows[0].endswith("4/4 summed")
    assert rows[1].endswith("3/3 summed")
