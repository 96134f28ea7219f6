"""``fedrec simulate`` end to end on synthetic data, and ``fedrec demo``'s fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from fedrec.cli import main
from fedrec.simulation import SimulationOptions, centralized_baseline, run_simulation
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import leave_one_out

KEYS = {"ndcg@10", "hr@10", "precision@10", "recall@10", "sampled_ndcg@10", "sampled_hr@10"}


@pytest.mark.slow
def test_simulate_writes_report(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    options = SimulationOptions(
        dataset="synthetic",
        recipe="fixed",  # this test checks the bpr recipe; tests/app/test_selection the search
        participants=3,
        partition="skewed",
        rounds=3,
        dim=16,
        local_epochs=1,
        data_dir=tmp_path / "coordinator",
        report=report_path,
    )
    console = Console(file=open(tmp_path / "out.txt", "w"), width=120)  # noqa: SIM115
    report = run_simulation(options, console)
    console.file.close()
    assert json.loads(report_path.read_text()) == json.loads(json.dumps(report, default=str))
    assert [entry["round"] for entry in report["history"]] == [1, 2, 3]
    assert all(entry["updates"] == 3 for entry in report["history"])
    for model in ("federated", "centralized", "popularity"):
        metrics = report["final"][model]["test"]
        assert KEYS <= set(metrics), model
        assert all(0.0 <= metrics[k] <= 1.0 for k in KEYS)
    # the federated model was trained and is not the untrained version 0
    assert report["final"]["federated"]["test"]["deployed_version"] >= 1
    for model in ("federated", "centralized"):  # which round was kept, and why it stopped
        chosen = report["final"][model]
        assert 1 <= chosen["chosen_round"] <= chosen["rounds_trained"] <= 3, model
        assert chosen["stopped_by"] in (
            "round cap (3)",
            "patience: 5 rounds without a validation gain above 0",
        ), model
    # every version was evaluated on validation, the final one included
    assert report["final"]["federated"]["rounds_trained"] == 3
    output = (tmp_path / "out.txt").read_text()
    assert "federated" in output
    assert "popularity" in output
    assert "10 latest interactions sampled 40x" in " ".join(output.split())
    assert report["options"]["recency_window"] == 10
    # the embedded coordinator kept its state in the given folder
    assert (tmp_path / "coordinator" / "fedrec.db").exists()
    # the baseline trained in its own process beside the federation: same figures as here
    data = make_synthetic(seed=options.seed)
    expected, chosen = centralized_baseline(
        data,
        leave_one_out(data),
        options.bpr_config(),
        options.rounds,
        patience=options.patience,
        min_delta=options.min_delta,
    )
    assert report["final"]["centralized"]["test"] == pytest.approx(expected)
    assert report["final"]["centralized"]["chosen_round"] == chosen["chosen_round"]


@pytest.mark.slow
def test_min_rounds_holds_both_the_federation_and_the_baseline(tmp_path: Path) -> None:
    # no gain can exceed min_delta 1: patience 1 alone stops both after round 2
    options = SimulationOptions(
        dataset="synthetic",
        recipe="fixed",
        participants=2,
        rounds=4,
        patience=1,
        min_delta=1.0,
        min_rounds=4,
        dim=8,
        local_epochs=1,
        data_dir=tmp_path / "coordinator",
    )
    with open(tmp_path / "out.txt", "w") as out:
        report = run_simulation(options, Console(file=out, width=120))
    for model in ("federated", "centralized"):
        assert report["final"][model]["rounds_trained"] == 4, model
    assert [entry["round"] for entry in report["history"]] == [1, 2, 3, 4]


@pytest.mark.slow
def test_demo_falls_back_to_synthetic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FEDREC_ML100K_URL", "http://127.0.0.1:9/ml-100k.zip")
    monkeypatch.delenv("FEDREC_ML100K_DIR", raising=False)
    report = tmp_path / "demo.json"
    code = main(
        ["demo", "--participants", "2", "--rounds", "2", "--dim", "8", "--report", str(report)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "synthetic data set instead" in out
    assert json.loads(report.read_text())["dataset"] == "synthetic"


@pytest.mark.slow
def test_simulate_with_compressed_transport(tmp_path: Path) -> None:
    """``--encoding int8``: the embedded federation's updates and downloads are int8."""
    options = SimulationOptions(
        dataset="synthetic",
        recipe="fixed",
        participants=2,
        rounds=2,
        dim=8,
        local_epochs=1,
        encoding="int8",
        data_dir=tmp_path / "coordinator",
    )
    console = Console(file=open(tmp_path / "out.txt", "w"), width=120)  # noqa: SIM115
    report = run_simulation(options, console)
    console.file.close()
    assert "transport: updates and downloads in int8" in (tmp_path / "out.txt").read_text()
    assert report["options"]["encoding"] == "int8"
    assert all(entry["updates"] == 2 for entry in report["history"])
    assert report["final"]["federated"]["test"]["deployed_version"] >= 1
