"""The EASE candidate of the recipe search: its data-scaled λ grid, the edge extension, the
cost guard, and how it competes with the iterative candidates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedrec import selection as selection_module
from fedrec.ease_search import (
    DENSE_MAX_ITEMS,
    EASE_TOP_K,
    EaseValidation,
    PooledEase,
    ease_cost,
    ease_lambda_grid,
    ease_skip_reason,
    ease_top_k_for,
    federation_lambdas,
    pooled_ease_model,
    search_lambdas,
    validate_ease,
)
from fedrec.options import SimulationOptions
from fedrec.partition import partition_users
from fedrec.selection import Candidate, Selection, select_recipe, with_ease
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import Interactions, evaluate_loo, leave_one_out
from participant_sdk.recsys.ease import EASEModel

GB = 2**30


def _interactions(users: list[int], items: list[int], num_items: int) -> Interactions:
    n = len(users)
    return Interactions(
        users=np.asarray(users, dtype=np.int64),
        items=np.asarray(items, dtype=np.int64),
        ratings=np.ones(n),
        timestamps=np.arange(n, dtype=np.float64),
        user_ids=[str(u) for u in range(max(users) + 1)],
        item_ids=[str(i) for i in range(num_items)],
    )


def test_the_lambda_grid_scales_with_the_mean_item_count() -> None:
    # 4 items seen 10, 20, 30, 40 times (mean 25); one item never seen is not averaged in
    items = [0] * 10 + [1] * 20 + [2] * 30 + [3] * 40
    sparse = _interactions(list(range(100)), items, 5)
    grid = ease_lambda_grid(sparse)
    assert grid == (7.9, 25.0, 79.0, 250.0, 790.0, 2500.0)
    # ten times denser data: the whole grid moves up ten times
    dense = _interactions(list(range(1000)), [i for i in items for _ in range(10)], 5)
    assert ease_lambda_grid(dense) == pytest.approx(tuple(10 * lam for lam in grid))


def test_the_search_extends_the_grid_past_a_best_edge() -> None:
    calls: list[float] = []

    def peak_at_5000(lam: float) -> float:
        calls.append(lam)
        return -abs(np.log10(lam) - np.log10(5000.0))

    scores = search_lambdas(peak_at_5000, (10.0, 100.0, 1000.0))
    # 10000 beats 1000 (still an edge), 100000 does not: the best is inside, it stops
    assert list(scores) == [10.0, 100.0, 1000.0, 10000.0, 100000.0]
    assert max(scores, key=scores.__getitem__) == 10000.0
    assert len(calls) == 5
    # a peak far below: at most three extensions, then it stops (bounded)
    low = search_lambdas(lambda lam: -lam, (10.0, 100.0), max_extensions=3)
    assert list(low) == [0.01, 0.1, 1.0, 10.0, 100.0]
    # an interior best: no extension
    assert list(search_lambdas(lambda lam: -abs(lam - 100.0), (10.0, 100.0, 1000.0))) == [
        10.0,
        100.0,
        1000.0,
    ]


def test_the_federation_revalidates_the_best_lambda_and_its_neighbours() -> None:
    assert federation_lambdas({1.0: 0.1, 3.0: 0.3, 10.0: 0.2, 30.0: 0.1}) == (1.0, 3.0, 10.0)
    assert federation_lambdas({1.0: 0.5, 3.0: 0.3, 10.0: 0.2}) == (1.0, 3.0)
    assert federation_lambdas({1.0: 0.1, 3.0: 0.3}) == (1.0, 3.0)


def test_the_guard_estimates_the_cost_and_says_why_it_skips() -> None:
    assert ease_skip_reason(1682, 943, 5, available_bytes=16 * GB) is None
    # the bar's size with few users: the user-side search route keeps it within budget
    assert ease_skip_reason(17_898, 1_900, 5, available_bytes=16 * GB) is None
    # as many users as items: every search solve is an n³ Cholesky; too slow, and it says so
    slow = ease_skip_reason(17_898, 20_000, 5, available_bytes=None)
    assert slow is not None
    assert "CPU minutes" in slow
    assert "17898 items" in slow
    cost = ease_cost(17_898, 20_000, 5)
    assert cost.cpu_seconds > ease_cost(17_898, 1_900, 5).cpu_seconds
    assert cost.search_seconds > cost.federation_seconds  # 7 search solves against 2
    # 4000 items: the solve peaks at ~0.25 GB; with 0.2 GB free it must not start
    memory = ease_skip_reason(4000, 943, 5, available_bytes=GB // 5)
    assert memory is not None
    assert "memory" in memory
    # per-user ML-100K: 943 participants x 4 downloads of an 11 MB B
    per_user = ease_skip_reason(1682, 943, 943, available_bytes=None)
    assert per_user is not None
    assert "943 participants" in per_user
    roomy = ease_skip_reason(1682, 943, 943, available_bytes=None, max_download_bytes=64 * GB)
    assert roomy is None


def test_large_catalogs_ship_b_pruned_and_publish_the_best_lambda_alone() -> None:
    assert ease_top_k_for(DENSE_MAX_ITEMS) is None
    assert ease_top_k_for(DENSE_MAX_ITEMS + 1) == EASE_TOP_K
    # pruned B: 8 n k bytes per download instead of 4 n²
    assert ease_cost(18_000, 1_900, 5).download_bytes == 5 * 2 * 8 * 18_000 * EASE_TOP_K
    found = EaseValidation({1.0: 0.1, 3.0: 0.3, 10.0: 0.2}, neighbours=0)
    assert found.lambdas == (3.0,)


def test_the_user_side_route_solves_what_the_cholesky_route_does() -> None:
    # fewer users than items: the search takes the user-side identity
    data = make_synthetic(num_users=40, num_items=120, timestamps=False, seed=3)
    solver = PooledEase(data)
    assert solver.route == "user-side"
    for top_k in (None, 7):
        fast = solver.model(30.0, top_k)
        exact = pooled_ease_model(data, 30.0, top_k)
        assert set(fast) == set(exact)
        for name in fast:
            np.testing.assert_allclose(fast[name], exact[name], atol=1e-5)


def test_validate_ease_scores_each_lambda_as_the_centralized_model_does() -> None:
    data = make_synthetic(num_users=80, num_items=60, seed=2)
    split = leave_one_out(data)
    found = validate_ease(split.train, split.valid)
    assert found.skipped is None
    assert set(ease_lambda_grid(split.train)) <= set(found.scores)
    for lam in list(found.scores)[:2]:
        model = EASEModel(split.train, lam)
        expected = evaluate_loo(model.score, split.train, split.valid)["ndcg@10"]
        assert found.scores[lam] == pytest.approx(expected, abs=1e-9)
    report = found.report()
    assert report["best_lambda"] == found.best_lambda
    assert found.best_lambda in report["federation_lambdas"]


def test_validate_ease_says_each_lambda_as_it_is_done() -> None:
    data = make_synthetic(num_users=60, num_items=40, seed=3)
    split = leave_one_out(data)
    said: list[tuple[float, float, float]] = []
    found = validate_ease(split.train, split.valid, progress=lambda *a: said.append(a))
    assert [(lam, value) for lam, value, _ in said] == list(found.scores.items())
    elapsed = [seconds for _, _, seconds in said]
    assert elapsed == sorted(elapsed)


@pytest.mark.parametrize(("threshold", "lines"), [(0.0, True), (1e9, False)])
def test_the_search_says_each_ease_lambda_only_when_its_estimate_is_long(
    monkeypatch: pytest.MonkeyPatch, threshold: float, lines: bool
) -> None:
    monkeypatch.setattr(selection_module, "EASE_PROGRESS_SECONDS", threshold)
    data = make_synthetic(num_users=40, num_items=50, seed=1)
    split = leave_one_out(data)
    groups = partition_users(data, "iid", 2, seed=0)
    options = SimulationOptions(dim=8, local_epochs=1, rounds=4)
    logged: list[str] = []
    _chosen, selection = select_recipe(options, split.train, split.valid, groups, log=logged.append)
    assert selection.ease is not None
    per_lambda = [line for line in logged if line.lstrip().startswith("ease lambda ")]
    if lines:
        assert len(per_lambda) == len(selection.ease["validation_ndcg@10_by_lambda"])
        assert any(line.startswith("ease: solving and validating each lambda") for line in logged)
    else:
        assert per_lambda == []


def _selection(best: float) -> Selection:
    bpr = Candidate("bpr+fedavg", {"model": "bpr"})
    return Selection([bpr], (4, 12), {"bpr+fedavg": {4: best - 0.01, 12: best}}, bpr, "halving")


def test_ease_wins_only_by_beating_the_final_rung() -> None:
    ease = EaseValidation({10.0: 0.20, 30.0: 0.25, 100.0: 0.22})
    won = with_ease(_selection(0.24), ease)
    assert won.chosen.name == "ease"
    assert won.chosen.settings == {"model": "ease", "ease_lambdas": (10.0, 30.0, 100.0)}
    assert "beats bpr+fedavg's (0.2400)" in won.why
    assert won.scores["ease"] == {12: 0.25}
    applied = won.chosen.apply(SimulationOptions())
    assert (applied.model, applied.ease_lambdas) == ("ease", (10.0, 30.0, 100.0))

    kept = with_ease(_selection(0.25), ease)  # a tie keeps the iterative winner
    assert kept.chosen.name == "bpr+fedavg"
    assert "EASE reached 0.2500" in kept.why
    assert kept.report()["ease"]["best_lambda"] == 30.0

    skipped = with_ease(_selection(0.1), EaseValidation({}, skipped="too large"))
    assert skipped.chosen.name == "bpr+fedavg"
    assert skipped.report()["ease"] == {"skipped": "too large"}


def test_a_pinned_model_leaves_ease_out() -> None:
    data = make_synthetic(num_users=40, num_items=50, seed=1)
    split = leave_one_out(data)
    groups = partition_users(data, "iid", 2, seed=0)
    options = dataclasses.replace(
        SimulationOptions(dim=8, local_epochs=1), model="ials", pinned=("model",)
    )
    _chosen, selection = select_recipe(options, split.train, split.valid, groups)
    assert selection.chosen.name == "ials+fedavg"
    assert selection.ease is None
    assert "ease" not in selection.report()


def test_with_only_ease_left_the_search_is_its_lambda_validation() -> None:
    data = make_synthetic(num_users=40, num_items=50, seed=1)
    split = leave_one_out(data)
    groups = partition_users(data, "iid", 2, seed=0)
    options = dataclasses.replace(SimulationOptions(dim=8), model="ease", pinned=("model",))
    chosen, selection = select_recipe(options, split.train, split.valid, groups)
    assert selection.chosen.name == "ease"
    assert chosen.model == "ease"
    report = selection.report()
    assert chosen.ease_lambdas == tuple(report["ease"]["federation_lambdas"])
    assert "the only candidate left by the pinned choices" in selection.why
