"""The anchor harness's plumbing (bench.anchors) on a tiny synthetic data set.

Nothing here needs the optional ``implicit`` package except the one test marked so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import anchor_models, anchors
from bench.anchor_models import Anchor, OnCheckpoint
from bench.anchors import Protocol, federated_rows, final_fit, format_table, run_anchor, tune
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys.data import Interactions
from participant_sdk.recsys.ease import EASEModel
from participant_sdk.recsys.metrics import evaluate_loo


@pytest.fixture(scope="module")
def proto() -> Protocol:
    return Protocol.build("synthetic", make_synthetic(num_users=80, num_items=200, seed=3))


def _fixed_fit(calls: list[tuple[int, int, int]], oracle: np.ndarray) -> Any:
    """A fake model: scores ``k * step * oracle`` (``k = 0``: all ties, ranked by index)."""

    def fit(
        train: Interactions,
        setting: Mapping[str, Any],
        seed: int,
        checkpoints: Sequence[int],
        on_checkpoint: OnCheckpoint,
    ) -> None:
        for step in checkpoints:
            calls.append((len(train), seed, step))
            weight = float(setting["k"]) * step

            def score(users: np.ndarray, weight: float = weight) -> np.ndarray:
                return weight * oracle[users]

            if not on_checkpoint(step, score):
                return

    return fit


def _oracle(proto: Protocol) -> np.ndarray:
    """Scores that put each user's validation item first."""
    scores = np.zeros((proto.full.num_users, proto.full.num_items))
    scores[proto.split.valid.users, proto.split.valid.items] = 1.0
    return scores


class TestProtocol:
    def test_split_is_leave_one_out_and_trainval_adds_validation(self, proto: Protocol) -> None:
        split = proto.split
        assert len(split.valid) == len(split.test) == proto.full.num_users
        assert len(proto.trainval) == len(split.train) + len(split.valid)
        assert len(proto.trainval) + len(split.test) == len(proto.full)
        assert proto.negatives is not None
        assert proto.negatives.shape == (len(split.test), 99)


class TestTune:
    def test_picks_the_best_setting_and_step_on_validation(self, proto: Protocol) -> None:
        calls: list[tuple[int, int, int]] = []
        anchor = Anchor(
            "fake",
            "fake",
            ({"k": 0.0}, {"k": 1.0}),
            (1, 2, 3),
            _fixed_fit(calls, _oracle(proto)),
            deterministic=True,
        )
        setting, step, val, curves = tune(anchor, proto)
        assert setting == {"k": 1.0}
        assert step == 1  # every step of k=1 ranks alike: the first to reach the best wins
        assert val == pytest.approx(1.0)
        assert [c["setting"] for c in curves] == [{"k": 0.0}, {"k": 1.0}]
        assert curves[0]["validation_ndcg@10"][0][1] < 1.0
        assert all(n == len(proto.split.train) and seed == 0 for n, seed, _ in calls)

    def test_patience_stops_a_flat_curve(self, proto: Protocol) -> None:
        calls: list[tuple[int, int, int]] = []
        anchor = Anchor(
            "fake",
            "fake",
            ({"k": 0.0},),
            tuple(range(1, 50)),
            _fixed_fit(calls, _oracle(proto)),
            True,
            2,
        )
        tune(anchor, proto)
        assert [step for _, _, step in calls] == [1, 2, 3]

    def test_verbose_prints_each_settings_best_as_it_ends(
        self, proto: Protocol, capsys: pytest.CaptureFixture[str]
    ) -> None:
        anchor = Anchor(
            "fake",
            "fake",
            ({"k": 0.0}, {"k": 1.0}),
            (1, 2),
            _fixed_fit([], _oracle(proto)),
            deterministic=True,
        )
        tune(anchor, proto)
        assert capsys.readouterr().out == ""
        tune(anchor, proto, verbose=True)
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2
        assert lines[0].strip().startswith("k=0, steps=")
        assert lines[1].strip().startswith("k=1, steps=1: val NDCG@10 1.0000 (")


class TestFinalFit:
    def test_retrains_on_train_and_validation_and_scores_the_test_split(
        self, proto: Protocol
    ) -> None:
        calls: list[tuple[int, int, int]] = []
        anchor = Anchor(
            "fake", "fake", ({"k": 1.0},), (1, 2), _fixed_fit(calls, _oracle(proto)), False
        )
        metrics = final_fit(anchor, proto, {"k": 1.0}, 2, seed=7)
        assert calls == [(len(proto.trainval), 7, 2)]
        assert {"ndcg@10", "hr@10", "precision@10", "recall@10", "sampled_ndcg@10"} <= set(metrics)

    def test_one_fit_for_deterministic_models_and_one_per_seed_otherwise(
        self, proto: Protocol
    ) -> None:
        for deterministic, expected in ((True, 1), (False, 3)):
            calls: list[tuple[int, int, int]] = []
            anchor = Anchor(
                "f", "f", ({"k": 1.0},), (1,), _fixed_fit(calls, _oracle(proto)), deterministic
            )
            row = run_anchor(anchor, proto, [0, 1, 2])
            assert len(row.test) == expected
            finals = [c for c in calls if c[0] == len(proto.trainval)]
            assert [seed for _, seed, _ in finals] == [0, 1, 2][:expected]


def test_ease_row_equals_the_metric_code_on_the_same_model(proto: Protocol) -> None:
    models = anchor_models.anchors(quick=True)
    row = run_anchor(models["ease"], proto, [0, 1, 2])
    lam = float(row.setting.split("=")[1])
    direct = evaluate_loo(EASEModel(proto.trainval, lam).score, proto.trainval, proto.split.test)
    assert len(row.test) == 1
    assert row.test[0]["ndcg@10"] == pytest.approx(direct["ndcg@10"])
    assert row.validation["ndcg@10"] == max(
        v for c in row.curves for _, v in c["validation_ndcg@10"]
    )


def test_ours_row_trains_our_bpr_with_early_stopping(proto: Protocol) -> None:
    models = anchor_models.anchors(quick=True, ours_max_rounds=2)
    row = run_anchor(models["ours"], proto, [0])
    assert row.setting in {"steps=1", "steps=2"}
    assert 0.0 <= row.test[0]["ndcg@10"] <= 1.0


def test_federated_row_from_a_simulate_report() -> None:
    report = {
        "options": {"participants": 5, "partition": "iid"},
        "protocol": "no retrain",
        "history": [
            {"seconds": 1.5, "validation_of_base": {"ndcg@10": 0.02}},
            {"seconds": 2.5, "validation_of_base": {"ndcg@10": 0.05}},
        ],
        "final": {"federated": {"test": {"ndcg@10": 0.04, "hr@10": 0.08, "deployed_version": 2}}},
    }
    (row,) = federated_rows(report, "r.json")
    assert row.validation == {"ndcg@10": 0.05}
    assert row.test == [{"ndcg@10": 0.04, "hr@10": 0.08, "deployed_version": 2.0}]
    assert row.fit_seconds == 4.0
    assert "participants=5" in row.setting
    assert federated_rows({"final": {}}, "empty.json") == []


def test_table_shows_the_ratio_to_the_best_library_anchor() -> None:
    def row(method: str, ndcg: float) -> anchors.Row:
        return anchors.Row(method, method, "", {"ndcg@10": ndcg}, [{"ndcg@10": ndcg}], 1.0, 1.0)

    table = format_table([row("als", 0.04), row("bpr", 0.05), row("ours", 0.06)])
    lines = table.splitlines()
    assert len(lines) == 5
    assert "| 1.200 |" in lines[-1]
    assert "| 0.800 |" in lines[2]


def test_main_runs_on_a_csv_without_implicit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_synthetic(num_users=40, num_items=30, seed=1)
    rng = np.random.default_rng(0)
    lines = ["uid,song,plays,ts"] + [
        f"u{data.user_ids[u]},s{data.item_ids[i]},{rng.integers(1, 50)},{k}"
        for k, (u, i) in enumerate(zip(data.users, data.items, strict=True))
    ]
    csv = tmp_path / "plays.csv"
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "rows.json"
    monkeypatch.setattr(anchors, "implicit_available", lambda: False)
    code = anchors.main(
        [
            "--dataset",
            "csv",
            "--data",
            str(csv),
            "--user-col",
            "uid",
            "--item-col",
            "song",
            "--strength-col",
            "plays",
            "--time-col",
            "ts",
            "--quick",
            "--methods",
            "popularity,ease,als",
            "--json",
            str(out),
        ]  # fmt: skip
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "pip install -e '.[bench]'" in captured.err
    assert "strength column: yes" in captured.out
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["popularity", "ease"]
    # 30 items leave fewer than 99 negatives to sample: the sampled metric is left out
    assert "sampled_ndcg@10" not in rows[0]["test"][0]


def test_implicit_anchors_run_on_the_same_plumbing(proto: Protocol) -> None:
    pytest.importorskip("implicit")
    models = anchor_models.anchors(quick=True, threads=1)
    for name in ("als", "bpr"):
        row = run_anchor(models[name], proto, [0])
        assert np.isfinite(row.test[0]["ndcg@10"])
        assert "steps=" in row.setting
