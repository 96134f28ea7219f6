"""FedAvg accumulation: numpy equivalence, dense vs row-sparse, determinism, row
normalization (``touched`` / ``total`` / ``sqrt_touched``) in the accumulator and through
the API."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from coordinator.domain.aggregation import FedAvgAccumulator, accumulate
from participant_sdk.wire import Update, decode_weights, encode_update, mf_spec
from tests.factories import create_federation, enrol, put_update

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


def _two_sparse() -> tuple[Update, Update]:
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
    return first, second


def test_total_normalization_divides_every_row_by_the_round_weight() -> None:
    acc = FedAvgAccumulator(SPEC, row_normalization="total")
    for update in _two_sparse():
        acc.add(update)
    out = acc.result(_base())
    # row 0: both sent it -> same as "touched"; row 4: only the 3-example update, / 4
    np.testing.assert_allclose(out["item_factors"][0], 1 + (1 * 2 + 3 * 6) / 4)
    np.testing.assert_allclose(out["item_factors"][4], 1 + 3 * 6 / 4)
    np.testing.assert_array_equal(out["item_factors"][[1, 2, 3, 5]], 1)  # nobody sent them
    np.testing.assert_allclose(out["item_bias"][[0, 4]], [(1 + 9) / 4, 3 * 3 / 4])


def test_total_normalization_with_server_lr() -> None:
    acc = FedAvgAccumulator(SPEC, server_lr=4.0, row_normalization="total")
    for update in _two_sparse():
        acc.add(update)
    out = acc.result(_base())
    np.testing.assert_allclose(out["item_factors"][4], 1 + 4.0 * 3 * 6 / 4)
    np.testing.assert_allclose(out["item_bias"][4], 4.0 * 3 * 3 / 4)


def test_total_equals_touched_for_dense_updates() -> None:
    updates = [_dense(1, 3), _dense(2, 7), _dense(3, 1)]
    a = FedAvgAccumulator(SPEC, server_lr=1.5)
    b = FedAvgAccumulator(SPEC, server_lr=1.5, row_normalization="total")
    for update in updates:
        a.add(update)
        b.add(update)
    for name in SPEC:
        np.testing.assert_array_equal(a.result(_base())[name], b.result(_base())[name])


def test_total_normalization_is_order_independent() -> None:
    first, second = _two_sparse()
    a = FedAvgAccumulator(SPEC, row_normalization="total")
    b = FedAvgAccumulator(SPEC, row_normalization="total")
    a.add(first)
    a.add(second)
    b.add(second)
    b.add(first)
    for name in SPEC:
        np.testing.assert_allclose(a.result(_base())[name], b.result(_base())[name])


def test_total_normalization_of_an_empty_round_keeps_the_base() -> None:
    out = FedAvgAccumulator(SPEC, row_normalization="total").result(_base())
    for name in SPEC:
        np.testing.assert_array_equal(out[name], _base()[name])


def test_sqrt_touched_divides_each_row_by_the_root_of_its_senders_weight() -> None:
    first, second = _two_sparse()
    acc = FedAvgAccumulator(
        SPEC, server_lr=3.0, row_normalization="sqrt_touched", weighting="uniform"
    )
    for update in (first, second):
        acc.add(update)
    out = acc.result(_base())
    # row 0: two senders, (2 + 6) / sqrt(2); row 4: one sender, 6 / 1; rows 1-3, 5: unsent
    np.testing.assert_allclose(out["item_factors"][0], 1 + 3.0 * 8 / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(out["item_factors"][4], 1 + 3.0 * 6, rtol=1e-6)
    np.testing.assert_array_equal(out["item_factors"][[1, 2, 3, 5]], 1)
    np.testing.assert_allclose(
        out["item_bias"][[0, 4]], [3.0 * (1 + 3) / np.sqrt(2), 3.0 * 3], rtol=1e-6
    )
    np.testing.assert_array_equal(out["item_bias"][[1, 2, 3, 5]], 0)


def test_sqrt_touched_with_example_weights() -> None:
    first, second = _two_sparse()  # 1 and 3 examples
    acc = FedAvgAccumulator(SPEC, row_normalization="sqrt_touched")
    for update in (first, second):
        acc.add(update)
    out = acc.result(_base())
    # row 0: (1 * 2 + 3 * 6) / sqrt(1 + 3); row 4: 3 * 6 / sqrt(3)
    np.testing.assert_allclose(out["item_factors"][0], 1 + 20 / 2, rtol=1e-6)
    np.testing.assert_allclose(out["item_factors"][4], 1 + 18 / np.sqrt(3), rtol=1e-6)


def test_sqrt_touched_lies_between_touched_and_the_sum() -> None:
    """n agreeing senders of a row: the touched mean moves it by one delta, sqrt_touched
    by sqrt(n) deltas, the plain sum by n."""
    n = 9
    updates = [
        Update(
            round=1,
            base_version=0,
            num_examples=1,
            tensors={
                "item_factors": np.full((1, 2), 0.5, np.float32),
                "item_bias": np.full(1, 0.5, np.float32),
            },
            rows=np.array([2], np.int64),
        )
        for _ in range(n)
    ]
    steps = {}
    for normalization in ("touched", "sqrt_touched"):
        acc = FedAvgAccumulator(SPEC, row_normalization=normalization, weighting="uniform")
        for update in updates:
            acc.add(update)
        steps[normalization] = float(acc.result(_base())["item_bias"][2])
    assert steps["touched"] == pytest.approx(0.5)
    assert steps["sqrt_touched"] == pytest.approx(0.5 * np.sqrt(n))


def test_sqrt_touched_of_an_empty_round_keeps_the_base() -> None:
    out = FedAvgAccumulator(SPEC, row_normalization="sqrt_touched").result(_base())
    for name in SPEC:
        np.testing.assert_array_equal(out[name], _base()[name])


def test_unknown_normalization_is_refused() -> None:
    with pytest.raises(ValueError, match="row_normalization"):
        FedAvgAccumulator(SPEC, row_normalization="rows")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weighting"):
        FedAvgAccumulator(SPEC, weighting="size")  # type: ignore[arg-type]


def test_uniform_weighting_ignores_num_examples() -> None:
    first, second = _two_sparse()
    touched = FedAvgAccumulator(SPEC, weighting="uniform")
    total = FedAvgAccumulator(SPEC, server_lr=3.0, row_normalization="total", weighting="uniform")
    for update in (first, second):
        touched.add(update)
        total.add(update)
    out = touched.result(_base())
    np.testing.assert_allclose(out["item_factors"][0], 1 + (2 + 6) / 2)
    np.testing.assert_allclose(out["item_factors"][4], 1 + 6)
    out = total.result(_base())
    # every row / 2 updates: a row's step is server_lr / K x the plain sum of deltas
    np.testing.assert_allclose(out["item_factors"][0], 1 + 3.0 * (2 + 6) / 2)
    np.testing.assert_allclose(out["item_factors"][4], 1 + 3.0 * 6 / 2)
    np.testing.assert_allclose(out["item_bias"][[0, 4]], [3.0 * (1 + 3) / 2, 3.0 * 3 / 2])
    assert total.total_examples == 4  # still counts the real examples


def test_uniform_equals_examples_when_weights_are_equal() -> None:
    updates = [_dense(1, 4), _dense(2, 4)]
    a = FedAvgAccumulator(SPEC, row_normalization="total")
    b = FedAvgAccumulator(SPEC, row_normalization="total", weighting="uniform")
    for update in updates:
        a.add(update)
        b.add(update)
    for name in SPEC:
        np.testing.assert_allclose(a.result(_base())[name], b.result(_base())[name], rtol=1e-6)


# ---------------------------------------------------------------------------- API level
def _closed_round(client: TestClient, fid: str, number: int, headers: dict[str, str]) -> dict:
    for _ in range(50):
        body: dict = client.get(f"/v1/federations/{fid}/rounds/{number}", headers=headers).json()
        if body["state"] in ("closed", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"round {number} did not close")


def test_api_stores_normalization_and_defaults_to_touched(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    default = create_federation(client, admin_headers)
    assert default["strategy"]["normalization"] == "touched"
    assert default["strategy"]["weighting"] == "examples"
    strategy = {
        "name": "fedavg",
        "server_lr": 2.0,
        "normalization": "total",
        "weighting": "uniform",
    }
    fed = create_federation(client, admin_headers, strategy=strategy)
    # the default aggregator (and the other optimizers' hyperparameters, at their defaults)
    assert fed["strategy"].items() >= {**strategy, "aggregator": "mean"}.items()
    strategy["aggregator"] = "mean"
    again = client.get(f"/v1/federations/{fed['id']}", headers=admin_headers).json()
    assert again["strategy"] == fed["strategy"]
    for field, value in (("normalization", "rows"), ("weighting", "size")):
        bad = client.post(
            "/v1/federations",
            json={
                "name": "bad",
                "model": {"kind": "mf", "num_items": 20, "dim": 4},
                "strategy": {"name": "fedavg", field: value},
            },
            headers=admin_headers,
        )
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert field in bad.text


@pytest.mark.parametrize(
    ("normalization", "weighting"),
    [("total", "examples"), ("total", "uniform"), ("sqrt_touched", "uniform")],
)
def test_api_round_aggregates_with_total_normalization(
    client: TestClient, admin_headers: dict[str, str], normalization: str, weighting: str
) -> None:
    fed = create_federation(
        client,
        admin_headers,
        strategy={
            "name": "fedavg",
            "server_lr": 2.0,
            "normalization": normalization,
            "weighting": weighting,
        },
        rounds={"min_participants": 2, "max_rounds": 2},
    )
    fid = fed["id"]
    _, shop_a = enrol(client, admin_headers, fid, "a")
    _, shop_b = enrol(client, admin_headers, fid, "b")
    base = {
        name: np.asarray(value, dtype=np.float32).astype(np.float64)
        for name, value in decode_weights(
            client.get(f"/v1/federations/{fid}/models/0/weights", headers=admin_headers).content
        ).items()
    }
    rows_a, rows_b = np.array([0, 3], np.int64), np.array([3, 7, 19], np.int64)
    for headers, rows, n, value in ((shop_a, rows_a, 1, 0.5), (shop_b, rows_b, 3, -0.25)):
        deltas = {
            "item_factors": np.full((rows.size, 4), value, np.float32),
            "item_bias": np.full(rows.size, value, np.float32),
        }
        body = encode_update(deltas, round=1, base_version=0, num_examples=n, rows=rows)
        assert put_update(client, fid, 1, body, headers).status_code in (200, 201)
    assert _closed_round(client, fid, 1, admin_headers)["state"] == "closed"
    new = {
        name: np.asarray(value, dtype=np.float64)
        for name, value in decode_weights(
            client.get(f"/v1/federations/{fid}/models/1/weights", headers=admin_headers).content
        ).items()
    }
    w_a, w_b = (1, 3) if weighting == "examples" else (1, 1)
    step = np.zeros(20)
    step[[0, 3]] += w_a * 0.5
    step[[3, 7, 19]] += w_b * -0.25
    if normalization == "total":
        step *= 2.0 / (w_a + w_b)
    else:  # each row over the root of its senders' weight: row 3 had two senders
        senders = np.ones(20)
        senders[3] = 2
        step *= 2.0 / np.sqrt(senders)
    np.testing.assert_allclose(new["item_bias"], base["item_bias"] + step, atol=1e-6)
    np.testing.assert_allclose(
        new["item_factors"][:, 0], base["item_factors"][:, 0] + step, atol=1e-6
    )


@pytest.mark.parametrize(
    ("shape", "rows"),
    [
        ((70_001,), None),  # 1-D, more than one block and a partial one
        ((3_000, 65), None),  # 2-D dense
        ((5_000, 64), np.array([0, 7, 8, 1_000, 4_999], dtype=np.int64)),
        ((5_000, 64), np.arange(0, 5_000, 2, dtype=np.int64)),  # several row blocks
    ],
)
def test_accumulate_gives_the_bytes_of_the_plain_float64_formula(
    shape: tuple[int, ...], rows: np.ndarray | None
) -> None:
    rng = np.random.default_rng(3)
    total = rng.standard_normal(shape)
    delta_shape = shape if rows is None else (rows.size, *shape[1:])
    delta = rng.standard_normal(delta_shape).astype(np.float32)
    expected = total.copy()
    if rows is None:
        expected += delta.astype(np.float64) * 0.37
    else:
        expected[rows] += delta.astype(np.float64) * 0.37
    accumulate(total, delta, 0.37, rows)
    assert total.tobytes() == expected.tobytes()


def test_accumulate_writes_through_a_non_contiguous_total() -> None:
    total = np.zeros((40, 6))[:, ::2]  # a strided view: no flat view exists
    accumulate(total, np.ones((40, 3), dtype=np.float32), 2.0)
    assert np.array_equal(total, np.full((40, 3), 2.0))


@pytest.mark.parametrize("clip", [0.05, 2.0, 3.0, 5.0, 6.0, 11.0, 20.0, 10_000.0])
@pytest.mark.parametrize("dp", [False, True])
def test_clipping_without_the_exact_norm_gives_the_same_bytes(
    clip: float, dp: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Updates proved within the clip by their peak skip the float64 norm: the sums, the
    result's bytes and DP's unclipped count are those of the exact norm everywhere (clips
    below, between and above the updates' norms, 2.5-5.4 here, and their ceilings
    ``sqrt(n) * peak``, 5.5-14.1)."""
    from coordinator.domain.aggregation import WeightedMean
    from coordinator.domain.privacy import DPAggregation

    updates = [_dense(seed, n) for seed, n in ((1, 3), (2, 7), (3, 1), (4, 2))]
    norms = sorted(update.norm() for update in updates)
    assert norms[0] < 3.0 < norms[-1]  # the clips fall on either side

    def fold() -> tuple[bytes, int]:
        dp_aggregation = (
            DPAggregation(clip_norm=clip, noise_multiplier=0.0, seed=b"\0" * 32) if dp else None
        )
        mean = WeightedMean(
            SPEC,
            row_normalization="total" if dp else "touched",
            weighting="uniform" if dp else "examples",
            dp=dp_aggregation,
            clip_norm=None if dp else clip,
        )
        for update in updates:
            mean.add(update)
        deltas = b"".join(delta.tobytes() for _, delta in mean.mean_deltas())
        return deltas, mean.unclipped

    shortcut = fold()
    monkeypatch.setattr(Update, "norm_surely_within", lambda *_: False)
    assert fold() == shortcut
    if dp:
        assert shortcut[1] == sum(norm <= clip for norm in norms)


@pytest.mark.parametrize("server_lr", [1.0, 0.7, 3.3])
def test_fedavg_step_writes_over_the_delta_with_the_plain_formula_bits(server_lr: float) -> None:
    """The step reuses the delta its aggregator handed over (no model-sized array of its
    own) and gives the bytes of ``base + server_lr * delta`` in float64; a read-only
    delta is copied, never written."""
    from coordinator.domain.aggregation import FedAvgStep

    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 8)).astype(np.float32)
    delta = rng.standard_normal((40, 8)) * 1e-3
    expected = base.astype(np.float64) + server_lr * delta if server_lr != 1.0 else None
    plain = np.add(base, delta if server_lr == 1.0 else np.multiply(delta, server_lr))
    if expected is not None:
        assert plain.tobytes() == expected.tobytes()
    given = delta.copy()
    new, state = FedAvgStep(server_lr).step("item_factors", base, given, {})
    assert new is given
    assert state == {}
    assert new.dtype == np.float64
    assert new.tobytes() == plain.tobytes()
    frozen = delta.copy()
    frozen.flags.writeable = False
    again, _ = FedAvgStep(server_lr).step("item_factors", base, frozen, {})
    assert again.tobytes() == plain.tobytes()
    assert frozen.tobytes() == delta.tobytes()
