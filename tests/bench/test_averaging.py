"""bench.averaging: the averaged item tensors, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from bench.averaging import Averages


def _tensors(value: float) -> dict[str, np.ndarray]:
    return {
        "item_factors": np.full((2, 3), value, dtype=np.float32),
        "item_bias": np.full(2, -value, dtype=np.float32),
    }


def test_window_means_and_emas_follow_the_versions() -> None:
    averages = Averages(windows=[2, 3], betas=[0.5])
    first = averages.update(_tensors(1.0))
    # one version: every average is that version
    assert first["mean3"]["item_factors"] == pytest.approx(np.ones((2, 3)))
    assert first["ema0.5"]["item_bias"] == pytest.approx(-np.ones(2))
    averages.update(_tensors(2.0))
    third = averages.update(_tensors(6.0))
    # the last 2: (2 + 6) / 2; the last 3: (1 + 2 + 6) / 3
    assert third["mean2"]["item_factors"] == pytest.approx(np.full((2, 3), 4.0))
    assert third["mean3"]["item_factors"] == pytest.approx(np.full((2, 3), 3.0))
    # EMA 0.5: 1 -> 0.5 * 1 + 0.5 * 2 = 1.5 -> 0.5 * 1.5 + 0.5 * 6 = 3.75
    assert third["ema0.5"]["item_factors"] == pytest.approx(np.full((2, 3), 3.75))
    assert third["ema0.5"]["item_bias"] == pytest.approx(np.full(2, -3.75))
    assert third["mean2"]["item_factors"].dtype == np.float32
