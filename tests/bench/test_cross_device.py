"""bench.cross_device: the default path's federation in process, on synthetic data."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

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


def test_seeds_summary_means_each_read_with_its_standard_error_over_seeds() -> None:
    from bench.cross_device import summarise_seeds

    def run(seed: int, fed: tuple[float, float], central: tuple[float, float]) -> dict:
        return {
            "seed": seed,
            "federated": {"validation_ndcg@10": fed[0], "test": {"ndcg@10": fed[1]}},
            "centralized": {"validation_ndcg@10": central[0], "test": {"ndcg@10": central[1]}},
        }

    runs = [run(0, (0.10, 0.09), (0.10, 0.10)), run(1, (0.12, 0.11), (0.10, 0.10))]
    found = summarise_seeds(runs)
    assert found["seeds"] == [0, 1]
    test = found["test"]
    assert test["federated"]["mean"] == pytest.approx(0.10)
    # ratios 0.9 and 1.1: mean 1.0, sd 0.1414, s.e. 0.1
    assert test["ratio"]["mean"] == pytest.approx(1.0)
    assert test["ratio"]["se"] == pytest.approx(0.1)
    assert test["difference"]["mean"] == pytest.approx(0.0)
    assert test["difference"]["se"] == pytest.approx(0.01)
    # Student's t with 1 degree of freedom: 12.706 s.e. either side of the mean
    assert test["ratio"]["t95"] == pytest.approx([1.0 - 1.2706, 1.0 + 1.2706], abs=1e-4)
    assert test["ratio_of_means"] == pytest.approx(0.10 / 0.10)
    assert test["seeds_at_or_above_bar"] == 1  # 1.1, not 0.9
    # validation: ratios 1.0 and 1.2
    assert found["validation"]["ratio"]["mean"] == pytest.approx(1.1)
    assert found["validation"]["centralized"]["se"] == pytest.approx(0.0)
    # --validation-only runs: the federated side alone, no ratio, no test
    alone = summarise_seeds(
        [{"seed": s, "federated": {"validation_ndcg@10": v}} for s, v in [(0, 0.1), (1, 0.3)]]
    )
    assert set(alone) == {"seeds", "validation"}
    assert alone["validation"] == {"federated": {"mean": 0.2, "se": 0.1}}


def test_seeds_runs_the_path_under_each_seed_and_keeps_the_single_seed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import sys

    from bench import cross_device

    common = [
        "cross_device",
        "--shape",
        "music-heavy",
        "--max-users",
        "100",
        "--chosen",
        "bpr+fedavg",
        "--set",
        "rounds=2",
        "--set",
        "patience=null",
        "--set",
        "dim=4",
    ]
    monkeypatch.setattr(sys, "argv", [*common, "--seeds", "2", "--json", str(tmp_path / "n.json")])
    cross_device.main()
    found = json.loads((tmp_path / "n.json").read_text())
    runs = found["runs"]
    assert [run["seed"] for run in runs] == [0, 1] == found["summary"]["seeds"]
    assert [run["chosen_options"]["seed"] for run in runs] == [0, 1]
    tests = [run["federated"]["test"]["ndcg@10"] for run in runs]
    assert found["summary"]["test"]["federated"]["mean"] == pytest.approx(sum(tests) / 2, abs=1e-5)
    ratios = [run["ratio"] for run in runs]
    assert found["summary"]["test"]["ratio"]["mean"] == pytest.approx(sum(ratios) / 2, abs=1e-5)
    assert found["summary"]["paired"]["se_of_difference"] >= 0.0
    # without --seeds: one run under --seed, the figures of the first seed above
    monkeypatch.setattr(sys, "argv", [*common, "--json", str(tmp_path / "one.json")])
    cross_device.main()
    single = json.loads((tmp_path / "one.json").read_text())
    assert "summary" not in single
    assert single["federated"]["test"] == runs[0]["federated"]["test"]
    assert single["centralized"]["test"] == runs[0]["centralized"]["test"]
    # --seeds 1 is --seed: refused
    monkeypatch.setattr(sys, "argv", [*common, "--seeds", "1"])
    with pytest.raises(SystemExit):
        cross_device.main()


def test_seeds_json_keeps_the_seeds_done_when_a_later_seed_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import sys

    from bench import cross_device

    real = cross_device.run_seed

    def fails_on_the_second(args: Any, options: Any, *rest: Any) -> dict[str, Any]:
        if options.seed == 4:
            raise RuntimeError("stopped")
        return real(args, options, *rest)

    monkeypatch.setattr(cross_device, "run_seed", fails_on_the_second)
    out = tmp_path / "partial.json"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "cross_device",
            "--shape",
            "music-heavy",
            "--max-users",
            "100",
            "--chosen",
            "bpr+fedavg",
            "--set",
            "rounds=2",
            "--set",
            "patience=null",
            "--set",
            "dim=4",
            "--seeds",
            "2",
            "--seed",
            "3",
            "--json",
            str(out),
        ],
    )
    with pytest.raises(RuntimeError):
        cross_device.main()
    found = json.loads(out.read_text())
    assert "summary" not in found
    assert [run["seed"] for run in found["runs"]] == [3]
    assert found["runs"][0]["federated"]["test"]["ndcg@10"] >= 0.0


def test_combine_summarises_the_runs_of_several_seeds_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import sys

    from bench import cross_device

    def run(seed: int, fed: float, central: float) -> dict[str, Any]:
        return {
            "seed": seed,
            "federated": {"validation_ndcg@10": 0.1, "test": {"ndcg@10": fed}},
            "centralized": {"validation_ndcg@10": 0.1, "test": {"ndcg@10": central}},
        }

    # a finished run (with its summary) and one stopped after its first seed
    first = [run(2, 0.12, 0.12), run(3, 0.09, 0.10)]
    (tmp_path / "a.json").write_text(json.dumps({"summary": {}, "runs": first}))
    (tmp_path / "b.json").write_text(json.dumps({"runs": [run(0, 0.10, 0.125)]}))
    out = tmp_path / "all.json"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "cross_device",
            "--combine",
            str(tmp_path / "a.json"),
            str(tmp_path / "b.json"),
            "--json",
            str(out),
        ],
    )
    cross_device.main()
    found = json.loads(out.read_text())
    assert [r["seed"] for r in found["runs"]] == [0, 2, 3] == found["summary"]["seeds"]
    test = found["summary"]["test"]
    # per-seed ratios 0.8, 1.0, 0.9: mean 0.9, sd 0.1, t(0.975, 2) = 4.303
    assert test["ratio"]["mean"] == pytest.approx(0.9)
    assert test["ratio"]["se"] == pytest.approx(0.1 / 3**0.5, abs=1e-5)
    assert test["ratio"]["t95"] == pytest.approx([0.9 - 0.2484, 0.9 + 0.2484], abs=1e-4)
    assert test["ratio_of_means"] == pytest.approx((0.31 / 3) / (0.345 / 3), abs=1e-4)
    assert test["seeds_at_or_above_bar"] == 1
    assert "paired" not in found["summary"]
    assert "1 of 3 seeds >= 0.95 x" in capsys.readouterr().out
    # a seed in two files is refused, as is a file that is not a --seeds run
    (tmp_path / "c.json").write_text(json.dumps({"runs": [run(3, 0.1, 0.1)]}))
    with pytest.raises(ValueError, match="seed 3"):
        cross_device.combine_runs([tmp_path / "a.json", tmp_path / "c.json"])
    (tmp_path / "d.json").write_text(json.dumps({"federated": {}}))
    with pytest.raises(ValueError, match="not the JSON"):
        cross_device.combine_runs([tmp_path / "d.json"])


def _pairs(data: Any) -> list[tuple[str, str]]:
    """A data set's (user id, item id) pairs, sorted."""
    return sorted(
        (data.user_ids[u], data.item_ids[i]) for u, i in zip(data.users, data.items, strict=True)
    )


def test_data_seed_zero_is_todays_draw_and_another_is_a_new_sample(tmp_path: Path) -> None:
    import argparse
    import json

    import numpy as np

    from bench import cross_device
    from bench.generalisation import SHAPES, load_shape
    from fedrec.synthetic import make_synthetic

    shape = SHAPES["sparse"]

    def draw(**seed: int) -> Any:
        found = load_shape(shape, tmp_path, quick=True, max_users=40, **seed)
        assert found is not None
        assert found[0].num_users == 40 == len(np.unique(found[0].users))
        return found[0]

    # today's draw spelled out (the quick shape): generator seed 0, 40 users kept with seed 0
    whole = make_synthetic(
        num_users=150, num_items=300, interactions_per_user=(3, 20), strengths=False, seed=0
    )
    kept = np.random.default_rng(0).choice(whole.num_users, size=40, replace=False)
    today = _pairs(whole.subset(np.isin(whole.users, kept)))
    assert _pairs(draw()) == _pairs(draw(data_seed=0)) == today
    other = draw(data_seed=1)
    assert sorted(other.user_ids) != sorted(draw().user_ids)  # another sample of users
    assert _pairs(other) != today  # and of interactions
    assert _pairs(draw(data_seed=1)) == _pairs(other)  # reproducible
    # the default reaches load_data; a namespace without it (bench.split_gap's) is draw 0
    # (full size, the bar's runs of bench/RESULTS.md: the 2,000 users every earlier run
    # kept, pinned by their sizes and first ids)
    args = argparse.Namespace(
        shape="sparse", max_users=2000, partition="per-user", participants=5, seed=0
    )
    full = cross_device.load_data(args, tmp_path)[0]
    assert (full.num_users, full.num_items, len(full)) == (2000, 2542, 19063)
    assert full.user_ids[:5] == ["1", "3", "11", "13", "14"]
    # --combine refuses runs of two draws
    run = {"federated": {"test": {"ndcg@10": 0.1}}, "centralized": {"test": {"ndcg@10": 0.1}}}
    (tmp_path / "a.json").write_text(json.dumps({"runs": [{"seed": 0, **run}]}))
    (tmp_path / "b.json").write_text(json.dumps({"runs": [{"seed": 1, "data_seed": 1, **run}]}))
    with pytest.raises(ValueError, match="data seeds"):
        cross_device.combine_runs([tmp_path / "a.json", tmp_path / "b.json"])
