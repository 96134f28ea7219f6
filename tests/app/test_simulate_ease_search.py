"""``fedrec simulate`` with the default recipe search over HTTP: EASE chosen where it wins
on validation and then trained as a real ``ease`` federation; EASE skipped by the cost
guard on a catalog too large for the search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.domain.specs import EASE_DEFAULT_LAMBDAS
from fedrec.cli import main


@pytest.mark.slow
def test_the_search_chooses_ease_where_it_wins_and_the_federation_runs_it(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "report.json"
    # the built-in synthetic data (300 users, 300 items): EASE's validation NDCG@10 ~0.174
    # against ~0.158 for the best iterative candidate (ials) after 12 rounds
    code = main(
        [
            "simulate",
            "--dataset",
            "synthetic",
            "--participants",
            "3",
            "--dim",
            "16",
            "--data-dir",
            str(tmp_path / "coordinator"),
            "--report",
            str(report_path),
        ]
    )
    assert code == 0
    report = json.loads(report_path.read_text())
    selection = report["selection"]
    assert selection["chosen"] == "ease"
    assert "EASE's validation NDCG@10" in selection["why"]
    ease = selection["ease"]
    best = ease["best_lambda"]
    scores = ease["validation_ndcg@10_by_lambda"]
    assert scores[f"{best:g}"] == max(scores.values())
    # EASE beat every iterative candidate's final-rung score
    iterative = {k: v for k, v in selection["validation_ndcg@10"].items() if k != "ease"}
    assert all(max(s.values()) < scores[f"{best:g}"] for s in iterative.values())
    lambdas = ease["federation_lambdas"]
    assert best in lambdas
    assert report["options"]["model"] == "ease"
    assert report["options"]["ease_lambdas"] == lambdas
    # the real ease federation: one round per lambda, the best validated lambda deployed,
    # and federated equals centralized (the Gram sum is exact)
    assert [entry["round"] for entry in report["history"]] == list(range(1, len(lambdas) + 1))
    federated, central = report["final"]["federated"], report["final"]["centralized"]
    assert federated["ease_lambda"] == central["ease_lambda"] == best
    assert federated["validation_ndcg@10"] == pytest.approx(scores[f"{best:g}"], abs=2e-4)
    for key in ("ndcg@10", "hr@10"):
        assert federated["test"][key] == pytest.approx(central["test"][key], abs=1e-4)
    assert federated["test"]["ndcg@10"] > report["final"]["popularity"]["test"]["ndcg@10"]


@pytest.mark.slow
def test_the_guard_skips_ease_and_the_search_goes_on_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same data where EASE wins above, with a CPU budget it cannot meet
    # (tests/app/test_ease_search.py checks the real estimates)
    monkeypatch.setattr("fedrec.ease_search.EASE_CPU_BUDGET_SECONDS", 0.0)
    report_path = tmp_path / "report.json"
    code = main(
        [
            "simulate",
            "--dataset",
            "synthetic",
            "--participants",
            "3",
            "--dim",
            "16",
            "--rounds",
            "6",
            "--data-dir",
            str(tmp_path / "coordinator"),
            "--report",
            str(report_path),
        ]
    )
    assert code == 0
    report = json.loads(report_path.read_text())
    selection = report["selection"]
    assert "estimated_cpu_seconds" in selection["ease"]
    assert "EASE over 300 items would cost" in selection["ease"]["skipped"]
    assert selection["chosen"] != "ease"
    assert "ease" not in selection["validation_ndcg@10"]
    assert "ease" not in selection["candidates"]
    assert report["options"]["model"] in ("bpr", "ials")
    assert report["final"]["federated"]["rounds_trained"] >= 1


@pytest.mark.slow
def test_a_pinned_ease_runs_the_default_lambda_grid_without_a_search(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    argv = ["simulate", "--dataset", "synthetic", "--model", "ease", "--participants", "2"]
    code = main([*argv, "--data-dir", str(tmp_path / "c"), "--report", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert "selection" not in report
    assert report["options"]["model"] == "ease"
    assert report["options"]["rounds"] == len(EASE_DEFAULT_LAMBDAS)
    federated, central = report["final"]["federated"], report["final"]["centralized"]
    assert federated["rounds_trained"] == len(EASE_DEFAULT_LAMBDAS)
    assert federated["ease_lambda"] == central["ease_lambda"]
    assert federated["ease_lambda"] in EASE_DEFAULT_LAMBDAS


@pytest.mark.slow
def test_a_pruned_ease_federation_equals_its_centralized_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The large-catalog path on a small one: B pruned to 20 per column travels over HTTP
    to the participants, and the federated test figures are the centralized ones (the
    baseline, in its own process, solves and prunes the same Gram the same way)."""
    monkeypatch.setattr("fedrec.ease_search.DENSE_MAX_ITEMS", 100)
    monkeypatch.setattr("fedrec.ease_search.EASE_TOP_K", 20)
    report_path = tmp_path / "report.json"
    argv = ["simulate", "--dataset", "synthetic", "--model", "ease", "--participants", "2"]
    code = main([*argv, "--data-dir", str(tmp_path / "c"), "--report", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    federated, central = report["final"]["federated"], report["final"]["centralized"]
    assert central["ease_top_k"] == 20
    assert federated["ease_lambda"] == central["ease_lambda"]
    for key in ("ndcg@10", "hr@10"):
        assert federated["test"][key] == pytest.approx(central["test"][key], abs=1e-6)
    assert federated["test"]["ndcg@10"] > report["final"]["popularity"]["test"]["ndcg@10"]
