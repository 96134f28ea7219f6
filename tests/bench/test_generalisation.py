"""The generalisation bench (bench.generalisation): its CSVs, its command and its table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import generalisation
from bench.generalisation import SHAPES, Outcome, format_table, simulate_command, write_csv
from participant_sdk.recsys.data import load_csv


@pytest.mark.parametrize("name", ["lastfm-like", "sparse", "movies-dated"])
def test_csv_round_trips_the_shape(tmp_path: Path, name: str) -> None:
    shape = SHAPES[name]
    data = shape.build(True)
    assert data is not None
    path = tmp_path / "data.csv"
    write_csv(data, path, strengths=shape.strengths, timestamps=shape.timestamps)
    loaded, report = load_csv(
        path,
        user_col="user",
        item_col="item",
        rating_col="plays" if shape.strengths else None,
        time_col="ts" if shape.timestamps else None,
    )
    assert report.malformed == 0
    assert len(loaded) == len(data)
    assert bool(np.isfinite(loaded.timestamps).all()) is shape.timestamps
    if shape.strengths:
        assert sorted(loaded.ratings.tolist()) == sorted(data.ratings.tolist())


def test_the_command_has_no_tuning_flag(tmp_path: Path) -> None:
    command = simulate_command(tmp_path / "d.csv", tmp_path / "r.json", SHAPES["lastfm-like"])
    flags = [part for part in command if part.startswith("--")]
    assert flags == [
        "--dataset",
        "--data",
        "--user-col",
        "--item-col",
        "--rating-col",
        "--participants",
        "--partition",
        "--seed",
        "--report",
    ]
    assert command[1] == "simulate"
    undated = simulate_command(tmp_path / "d.csv", tmp_path / "r.json", SHAPES["sparse"])
    assert "--rating-col" not in undated
    assert "--time-col" in undated


def test_table_ratios() -> None:
    row = Outcome("x", "1 u", federated=0.05, centralized=0.04, popularity=0.01, seconds=60.0)
    row.anchors = {"als": 0.1, "bpr": 0.025}
    table = format_table([row])
    assert "| 1.250 |" in table  # × central
    assert "0.1000 (als) | 0.500 |" in table  # best anchor, × anchor
    assert "1.0 min" in table


def test_unknown_shape_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert generalisation.main(["--shapes", "nope"]) == 2
    assert "unknown shapes" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    """The whole bench on one tiny shape: a real simulate subprocess and the anchors."""
    out = tmp_path / "rows.json"
    code = generalisation.main(["--quick", "--shapes", "sparse", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert rows[0]["shape"] == "sparse"
    assert 0.0 < rows[0]["federated"] <= 1.0
    assert 0.0 < rows[0]["centralized"] <= 1.0


@pytest.mark.slow
def test_anchors_only_runs_no_simulate(tmp_path: Path) -> None:
    """--anchors-only: the library anchors on the shape's split, no simulate subprocess."""
    pytest.importorskip("implicit")
    out = tmp_path / "rows.json"
    keep = tmp_path / "kept"
    code = generalisation.main(
        ["--quick", "--anchors-only", "--shapes", "sparse", "--json", str(out), "--keep", str(keep)]
    )
    assert code == 0
    row = json.loads(out.read_text())[0]
    assert not list(keep.glob("*.simulate.log"))  # the default command never ran
    assert np.isnan(row["federated"])
    assert np.isnan(row["centralized"])
    assert set(row["anchors"]) == {"als", "bpr"}
    assert all(0.0 < value <= 1.0 for value in row["anchors"].values())
