"""bench.compression measures what the encodings really cost in bytes and in quality."""

from __future__ import annotations

import pytest

from bench import compression
from tests.datasets import ML100K_DIR


def test_large_model_bytes_halve_and_quarter() -> None:
    rows = {e: (model, update) for e, model, update in compression.large_model_bytes(500, 64)}
    float32 = rows["float32"][0]
    assert 500 * 65 * 4 <= float32 < 500 * 65 * 4 + 400
    # float16: two bytes a value; int8: one, plus a float32 scale per row (1/16 at dim 64)
    assert rows["float16"][0] / float32 == pytest.approx(0.5, abs=0.01)
    assert rows["int8"][0] / float32 == pytest.approx(0.25 + 4 / 65 / 4, abs=0.01)
    assert all(model == pytest.approx(update, rel=0.05) for model, update in rows.values())


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
