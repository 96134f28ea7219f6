"""bench.privacy_frontier --quick runs end to end and reports a sane frontier."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest

from bench import privacy_frontier


def test_quick_frontier_structure_and_sanity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "frontier.json"
    assert privacy_frontier.main(["--quick", "--epsilons", "8,inf", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| target ε |" in printed
    figures = json.loads(out.read_text())
    (population,) = privacy_frontier.QUICK
    # validation: every candidate of epsilon 8's grid once; the one-candidate reference
    # grid of epsilon = inf has nothing to choose and goes straight to its test run
    assert len(population.candidates) > 1
    assert len(population.references) == 1
    assert len(figures["validation"]) == len(population.candidates)
    assert {r["phase"] for r in figures["validation"]} == {"valid"}
    (table,) = figures["tables"]
    rows = table["rows"]
    # the test split once per epsilon, the chosen candidate of that epsilon's grid
    assert [r["target_epsilon"] for r in rows] == [8.0, math.inf]
    assert {r["phase"] for r in rows} == {"test"}
    private, reference = rows
    grid = [asdict(c) for c in population.candidates]
    assert private["candidate"] in grid
    best_valid = max(
        (r for r in figures["validation"] if r["target_epsilon"] == 8.0),
        key=lambda r: r["ndcg@10"],
    )
    assert private["candidate"] == best_valid["candidate"]
    # the noise was calibrated to the target by the PLD accountant, from below
    assert private["noise_multiplier"] > 0
    assert 8.0 * 0.95 < private["epsilon"] <= 8.0
    assert 0 < private["clipped_fraction"] <= 1
    assert reference["noise_multiplier"] == 0
    assert reference["epsilon"] == math.inf
    assert reference["ratio_to_non_private"] == 1.0
    assert private["ratio_to_non_private"] == pytest.approx(
        private["ndcg@10"] / reference["ndcg@10"]
    )
    # the cohort is about q N, and the non-private model learns beyond popularity
    cand = private["candidate"]
    assert 0.5 < private["mean_cohort"] / (cand["sampling_rate"] * table["participants"]) < 1.5
    assert reference["ndcg@10"] > table["popularity_test_ndcg@10"]
    assert all(0.0 <= r["ndcg@10"] <= 1.0 for r in rows)


def test_pilot_mode_scores_every_candidate_on_validation_only(tmp_path: Path) -> None:
    (population,) = privacy_frontier.QUICK
    figures = privacy_frontier.frontier([population], tmp_path, [8.0, math.inf], jobs=1, test=False)
    rows = figures["validation"]
    # every candidate of both grids once, even the one-candidate reference grid; no test run
    assert len(rows) == len(population.candidates) + len(population.references)
    assert {r["phase"] for r in rows} == {"valid"}
    assert all(not table["rows"] for table in figures["tables"])
    table = privacy_frontier.validation_markdown(figures)
    assert table.count("\n") == len(rows) + 1


def test_a_candidate_names_its_server_step_and_adaptive_clipping() -> None:
    plain = privacy_frontier.Candidate(0.125, 10, 0.5, server_lr=500.0)
    assert plain.strategy() == {"name": "fedavg", "server_lr": 500.0}
    assert plain.adaptive_clipping() is None
    assert plain.label() == "q=0.125, T=10, C=0.5, lr=500"
    assert plain.label(private=False) == "q=0.125, T=10, lr=500"
    tuned = privacy_frontier.Candidate(
        0.25, 10, 1.0, optimizer="fedavgm", momentum=0.5, target_quantile=0.8, dim=16
    )
    assert tuned.strategy() == {"name": "fedavgm", "server_lr": 250.0, "server_momentum": 0.5}
    adaptive = tuned.adaptive_clipping()
    assert adaptive is not None
    assert adaptive.target_quantile == 0.8
    assert "adaptive γ=0.8" in tuned.label()
    assert "dim=16" in tuned.label()
