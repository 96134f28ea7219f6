"""bench.compression measures what the encodings really cost in bytes and in quality."""

from __future__ import annotations

import pytest

from bench import compression
from fedrec.options import SimulationOptions
from tests.datasets import ML100K_DIR


def test_large_model_bytes_halve_and_quarter() -> None:
    rows = {e: (model, update) for e, model, update in compression.large_model_bytes(500, 64)}
    float32 = rows["float32"][0]
    assert 500 * 65 * 4 <= float32 < 500 * 65 * 4 + 400
    # float16: two bytes a value; int8: one, plus a float32 scale per row (1/16 at dim 64)
    assert rows["float16"][0] / float32 == pytest.approx(0.5, abs=0.01)
    assert rows["int8"][0] / float32 == pytest.approx(0.25 + 4 / 65 / 4, abs=0.01)
    assert all(model == pytest.approx(update, rel=0.05) for model, update in rows.values())


def test_fit_encodings_keep_the_float32_reference_first_and_refuse_unknown_ones() -> None:
    assert compression.fit_encodings("float16") == ["float32", "float16"]
    assert compression.fit_encodings("int8, float32") == ["float32", "int8"]
    with pytest.raises(ValueError, match="bfloat16"):
        compression.fit_encodings("float16,bfloat16")


def test_paired_change_is_the_mean_per_seed_ratio_over_shared_seeds() -> None:
    reference = {0: 0.10, 1: 0.20, 2: 0.05}
    other = {0: 0.09, 1: 0.22, 3: 0.50}  # seed 2 has no pair and seed 3 no reference
    mean, sem = compression.paired_change(reference, other)
    # changes -10 % and +10 %: mean 0, sample std 0.1414, s.e. 0.1414 / sqrt(2) = 0.1
    assert mean == pytest.approx(0.0, abs=1e-12)
    assert sem == pytest.approx(0.1, rel=1e-9)
    assert compression.paired_change(reference, {0: 0.11}) == pytest.approx((0.1, 0.0))


def test_the_default_path_recipe_is_what_simulate_runs_by_default() -> None:
    config, server, lr_decay = compression._recipe(compression.DEFAULT_PATH, 3)
    assert config == SimulationOptions(seed=3).bpr_config()
    assert (config.dim, config.learning_rate, config.seed) == (64, 0.05, 3)
    assert (server.server_lr, server.normalization, lr_decay) == (2.0, "touched", 1.0)
    assert compression._rounds(compression.DEFAULT_PATH) == 20
    # the quality bench's selection is unchanged: dim 128, server_lr 8, lr decay 0.96
    config, server, lr_decay = compression._recipe("iid-5", 0)
    assert (config.dim, server.server_lr, lr_decay) == (128, 8.0, 0.96)


@pytest.mark.slow
@pytest.mark.skipif(ML100K_DIR is None, reason="MovieLens 100K not available")
def test_one_round_fit_reports_quality_and_the_served_model() -> None:
    assert ML100K_DIR is not None
    out = compression.run_fit(compression.FitJob(ML100K_DIR, "iid-5", "int8", 0, 1))
    assert 0 < out["ndcg"] < 1
    assert set(out["served"]) == {"float16", "int8"}
    assert all(0 < value < 1 for value in out["served"].values())
    # int8 row-sparse uploads of 5 silos: about a quarter of float32's 4.4 MB
    assert 0.9e6 < out["bytes"] < 1.5e6
