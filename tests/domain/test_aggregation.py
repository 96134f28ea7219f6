"""FedAvg accumulation: numpy equivalence, dense vs row-sparse, determinism."""

from __future__ import annotations

import numpy as np

from coordinator.domain.aggregation import FedAvgAccumulator
from participant_sdk.wire import Update, mf_spec

SPEC = mf_spec(num_items=6, dim=2)


def _dense(seed: int, n: int) -> Update:
    rng = np.random.default_rng(seed)
    tensors = {
        "item_factors": rng.standard_normal((6, 2)).astype(np.float32),
        "item_bias": rng.standard_normal(6).astype(np.float32),
    }
    return Update(round=1, base_version=0, num_examples=n, tensors=tensors)


def _base() -> dict[str, np.ndarray]:
    return {"item_factors": np.ones((6, 2), np.float32), "item_bias": np.zeros(6, np.float32)}


def test_weighted_mean() -> None:
    updates = [_dense(1, 3), _dense(2, 7)]
    acc = FedAvgAccumulator(SPEC)
    for update in updates:
        acc.add(update)
    result = acc.result(_base())
    for name in SPEC:
        expected = (
            _base()[name].astype(np.float64)
            + (
                3 * updates[0].tensors[name].astype(np.float64)
                + 7 * updates[1].tensors[name].astype(np.float64)
            )
            / 10
        )
        np.testing.assert_array_equal(result[name], expected.astype(np.float32))


def test_sparse_equals_dense_when_all_rows_sent() -> None:
    dense = [_dense(1, 3), _dense(2, 7)]
    rows = np.arange(6, dtype=np.int64)
    sparse = [
        Update(round=1, base_version=0, num_examples=u.num_examples, tensors=u.tensors, rows=rows)
        for u in dense
    ]
    a, b = FedAvgAccumulator(SPEC), FedAvgAccumulator(SPEC)
    for update in dense:
        a.add(update)
    for update in sparse:
        b.add(update)
    for name in SPEC:
        np.testing.assert_array_equal(a.result(_base())[name], b.result(_base())[name])


def test_sparse_rows_average_over_senders_only() -> None:
    first = Update(
        round=1,
        base_version=0,
        num_examples=1,
        tensors={
            "item_factors": np.full((1, 2), 2.0, np.float32),
            "item_bias": np.ones(1, np.float32),
        },
        rows=np.array([0], np.int64),
    )
    second = Update(
        round=1,
        base_version=0,
        num_examples=3,
        tensors={
            "item_factors": np.full((2, 2), 6.0, np.float32),
            "item_bias": np.full(2, 3.0, np.float32),
        },
        rows=np.array([0, 4], np.int64),
    )
    acc = FedAvgAccumulator(SPEC)
    acc.add(first)
    acc.add(second)
    out = acc.result(_base())
    np.testing.assert_allclose(out["item_factors"][0], 1 + (1 * 2 + 3 * 6) / 4)
    np.testing.assert_allclose(out["item_factors"][4], 1 + 6)
    np.testing.assert_array_equal(out["item_factors"][1], 1)  # nobody sent row 1
    np.testing.assert_allclose(out["item_bias"][[0, 4]], [(1 + 9) / 4, 3])


def test_server_lr_scales_the_step() -> None:
    acc = FedAvgAccumulator(SPEC, server_lr=2.0)
    update = _dense(1, 5)
    acc.add(update)
    out = acc.result(_base())
    expected = 1 + 2.0 * update.tensors["item_factors"].astype(np.float64)
    np.testing.assert_allclose(out["item_factors"], expected.astype(np.float32))
