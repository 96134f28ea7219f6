"""bench.cross_device: the default path's federation in process, on synthetic data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.cross_device import _override, federate
from fedrec.options import SimulationOptions
from fedrec.partition import partition_users
from fedrec.selection import candidates_for, has_timestamps
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import leave_one_out


def test_the_per_user_federation_deploys_its_best_validated_round() -> None:
    data = make_synthetic(num_users=40, num_items=200, seed=2)
    split = leave_one_out(data)
    groups = partition_users(data, "per-user")
    # window 1: the raw curve (the default smooths it: tests/domain/test_validation_curve.py)
    options = SimulationOptions(dim=8, local_epochs=1, rounds=6, patience=2, validation_window=1)
    (summed,) = [
        c
        for c in candidates_for(
            options,
            timestamps=has_timestamps(split.train),
            users_per_participant=1,
            participants=len(groups),
        )
        if c.name == "bpr+fedavg-sum"
    ]
    chosen = dataclasses.replace(summed.apply(options), rounds=6)
    test, found = federate(chosen, data, split, groups)
    curve = found["validation_curve"]
    assert 1 <= found["chosen_round"] <= found["rounds_trained"] == len(curve) <= 6
    # the deployed round is the best validated one (the curve is rounded to 4 places)
    assert round(found["validation_ndcg@10"], 4) == max(curve)
    assert curve[found["chosen_round"] - 1] == max(curve)
    assert 0.0 <= test["ndcg@10"] <= 1.0
    assert {"hr@10", "sampled_ndcg@10"} <= set(test)
    # --validation-only: the same deterministic federation, no test figures
    untested, again = federate(chosen, data, split, groups, test=False)
    assert untested == {}
    assert again == found


def test_set_overrides_an_option_field_and_refuses_unknown_ones() -> None:
    assert _override("patience=15") == ("patience", 15)
    assert _override('server_optimizer="fedavgm"') == ("server_optimizer", "fedavgm")
    assert _override("patience=null") == ("patience", None)
    with pytest.raises(SystemExit, match="no SimulationOptions field"):
        _override("patiense=15")


def test_the_paired_gap_is_the_mean_difference_with_its_standard_error() -> None:
    import numpy as np

    from bench.cross_device import paired_gap

    # 200 users: differences 0.5, 0, 0, 0.5, ...: mean 0.25, sample variance
    # 0.0625 * 200 / 199, so se = sqrt(0.0625 / 199) = 0.017722
    a = np.tile([1.0, 0.5, 0.0, 0.5], 50)
    b = np.tile([0.5, 0.5, 0.0, 0.0], 50)
    found = paired_gap(a, b)
    assert found["difference"] == pytest.approx(0.25)
    assert found["se_of_difference"] == pytest.approx(0.01772, abs=1e-5)
    low, high = found["ratio_95ci"]
    assert 1.0 <= low <= 2.0 <= high  # mean(a) / mean(b) = 2


def test_shape_gives_a_per_user_partition_of_the_shapes_csv(tmp_path: Path) -> None:
    import argparse

    import numpy as np

    from bench.cross_device import load_data
    from bench.generalisation import SHAPES

    args = argparse.Namespace(
        shape="movies-dated", max_users=25, partition="per-user", participants=5, seed=0
    )
    data, options = load_data(args, tmp_path)
    assert data.num_users == 25 == len(np.unique(data.users))
    # read back from the CSV with the shape's columns, as `fedrec simulate --dataset csv`
    assert options.dataset == "csv"
    assert options.data == tmp_path / "movies-dated.csv"
    assert (options.rating_col, options.time_col) == ("plays", "ts")
    assert bool(np.isfinite(data.timestamps).all())
    groups = partition_users(data, options.partition, options.participants, seed=options.seed)
    assert [g.tolist() for g in groups] == [[u] for u in range(25)]
    # a shape without timestamps names no time column, and its timestamps stay unknown
    undated = argparse.Namespace(**{**vars(args), "shape": "music-heavy"})
    data, options = load_data(undated, tmp_path)
    assert options.time_col is None
    assert bool(np.isnan(data.timestamps).all())
    assert not SHAPES["music-heavy"].timestamps
