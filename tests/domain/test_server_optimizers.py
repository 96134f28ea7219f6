"""FedAvgM, FedAdam and FedYogi against steps computed by hand, two rounds so the
moments carry, with row-sparse rounds: an untouched row keeps its weights and moments."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pytest

from coordinator.domain.aggregation import FedAvgStep, WeightedMean
from coordinator.domain.errors import ValidationFailed
from coordinator.domain.privacy import DPAggregation, check_dp_policy
from coordinator.domain.server_optimizers import FedAdam, FedAvgM, FedYogi, build_optimizer
from coordinator.domain.specs import PrivacyPolicy, StrategySpec
from coordinator.domain.strategy import Strategy, build_strategy
from participant_sdk.wire import Update, decode_weights, encode_weights, mf_spec

# Three rows of one tensor. Row 0 is touched in both rounds, row 1 only in round 2,
# row 2 only in round 1 (its moments must then hold still in round 2).
DELTAS = (np.array([1.0, 0.0, 1.0]), np.array([0.5, 1.0, 0.0]))
TOUCHED = (np.array([True, False, True]), np.array([True, True, False]))


def two_rounds(
    optimizer: FedAvgM | FedAdam,
) -> list[tuple[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]]]:
    """Run both rounds; the state goes through safetensors bytes as it is stored."""
    weights = np.zeros(3, dtype=np.float32)
    state: Mapping[str, npt.NDArray[np.generic]] = {}
    out = []
    for delta, touched in zip(DELTAS, TOUCHED, strict=True):
        new, entries = optimizer.step("item_bias", weights, delta, state, touched=touched)
        weights = new.astype(np.float32)  # stored as float32, as the strategy rounds it
        out.append((weights, entries))
        state = decode_weights(encode_weights(entries, {"kind": "server-state"}))
    return out


def test_fedavgm_two_rounds_by_hand() -> None:
    (x1, s1), (x2, s2) = two_rounds(FedAvgM(server_lr=2.0, momentum=0.5))
    # round 1: m = 0.5 * 0 + d; x = 0 + 2 * m
    np.testing.assert_array_equal(s1["m.item_bias"], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(x1, [2.0, 0.0, 2.0])
    # round 2: row 0: m = 0.5 * 1 + 0.5 = 1, x = 2 + 2; row 1: m = 1, x = 0 + 2;
    # row 2 untouched: m stays 1 and x stays 2 (no drift on old momentum)
    np.testing.assert_array_equal(s2["m.item_bias"], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(x2, [4.0, 2.0, 2.0])


def test_fedadam_two_rounds_by_hand() -> None:
    # b1 = 0.5, b2 = 0.75, tau = 0.5: v starts at tau^2 = 0.25
    (x1, s1), (x2, s2) = two_rounds(FedAdam(server_lr=1.0, beta1=0.5, beta2=0.75, tau=0.5))
    # round 1, d = 1: m = 0.5; v = 0.75 * 0.25 + 0.25 * 1 = 0.4375
    step_1 = 0.5 / (math.sqrt(0.4375) + 0.5)
    np.testing.assert_array_equal(s1["m.item_bias"], [0.5, 0.0, 0.5])
    np.testing.assert_array_equal(s1["v.item_bias"], [0.4375, 0.25, 0.4375])
    np.testing.assert_allclose(x1, [step_1, 0.0, step_1], rtol=1e-6)
    assert x1[1] == 0.0  # untouched: exactly the base
    # round 2: row 0, d = 0.5: m = 0.25 + 0.25 = 0.5; v = 0.328125 + 0.0625 = 0.625^2
    # row 1, d = 1 (first touch): m = 0.5, v = 0.4375; row 2 untouched: all held
    np.testing.assert_array_equal(s2["m.item_bias"], [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(s2["v.item_bias"], [0.390625, 0.4375, 0.4375])
    np.testing.assert_allclose(x2, [step_1 + 0.5 / (0.625 + 0.5), step_1, step_1], rtol=1e-6)
    assert x2[2] == x1[2]


def test_fedyogi_two_rounds_by_hand() -> None:
    (x1, s1), (x2, s2) = two_rounds(FedYogi(server_lr=1.0, beta1=0.5, beta2=0.75, tau=0.5))
    # round 1, d = 1: v = 0.25 - 0.25 * 1 * sign(0.25 - 1) = 0.5 (Adam: 0.4375)
    step_1 = 0.5 / (math.sqrt(0.5) + 0.5)
    np.testing.assert_array_equal(s1["m.item_bias"], [0.5, 0.0, 0.5])
    np.testing.assert_array_equal(s1["v.item_bias"], [0.5, 0.25, 0.5])
    np.testing.assert_allclose(x1, [step_1, 0.0, step_1], rtol=1e-6)
    # round 2: row 0, d = 0.5: v = 0.5 - 0.25 * 0.25 * sign(0.5 - 0.25) = 0.4375;
    # row 1, d = 1: v = 0.5 as row 0 in round 1; row 2 untouched
    np.testing.assert_array_equal(s2["m.item_bias"], [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(s2["v.item_bias"], [0.4375, 0.5, 0.5])
    np.testing.assert_allclose(
        x2, [step_1 + 0.5 / (math.sqrt(0.4375) + 0.5), step_1, step_1], rtol=1e-6
    )
    assert x2[2] == x1[2]


def test_a_state_of_the_wrong_shape_is_refused() -> None:
    state = {"m.item_bias": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match="shape"):
        FedAdam().step("item_bias", np.zeros(3, np.float32), np.zeros(3), state)


def sparse_update(rows: list[int], value: float) -> Update:
    n = len(rows)
    return Update(
        round=1,
        base_version=0,
        num_examples=n,
        tensors={
            "item_factors": np.full((n, 2), value, np.float32),
            "item_bias": np.full(n, value, np.float32),
        },
        rows=np.array(rows, dtype=np.int64),
    )


@pytest.mark.parametrize(
    "optimizer", [FedAvgM(), FedAdam(), FedYogi()], ids=lambda o: type(o).__name__
)
def test_rows_no_update_sent_keep_weights_and_moments_through_the_strategy(
    optimizer: FedAvgM | FedAdam,
) -> None:
    spec = mf_spec(num_items=4, dim=2)
    rng = np.random.default_rng(0)
    base = {
        "item_factors": rng.standard_normal((4, 2)).astype(np.float32),
        "item_bias": rng.standard_normal(4).astype(np.float32),
    }
    state: Mapping[str, npt.NDArray[np.generic]] = {}
    # round 1 touches rows 0, 1, 2; round 2 only rows 0 and 3
    for sent in ([[0, 1], [1, 2]], [[0], [3]]):
        strategy = Strategy(WeightedMean(spec), optimizer)
        for rows in sent:
            strategy.add(sparse_update(rows, 0.1))
        new, new_state = strategy.result(base, state)
        untouched = sorted(set(range(4)) - {r for rows in sent for r in rows})
        for name in spec:
            np.testing.assert_array_equal(new[name][untouched], base[name][untouched])
            for key in (f"m.{name}", f"v.{name}"):
                if key in state:
                    np.testing.assert_array_equal(new_state[key][untouched], state[key][untouched])
            touched = sorted({r for rows in sent for r in rows})
            assert np.all(new[name][touched] != base[name][touched])
        base, state = new, new_state
    # row 2 was touched in round 1 only: its momentum is non-zero and was held
    assert np.all(state["m.item_bias"][[0, 1, 2, 3]] != 0)


def test_under_dp_every_row_counts_as_touched() -> None:
    spec = mf_spec(num_items=4, dim=2)
    dp = DPAggregation(clip_norm=1.0, noise_multiplier=0.5, seed=b"s" * 32)
    mean = WeightedMean(spec, row_normalization="total", weighting="uniform", dp=dp)
    mean.add(sparse_update([0], 0.1))
    assert mean.touched("item_bias").all()
    plain = WeightedMean(spec)
    plain.add(sparse_update([0], 0.1))
    np.testing.assert_array_equal(plain.touched("item_bias"), [True, False, False, False])


@pytest.mark.parametrize(
    ("name", "kind", "lr"),
    [
        ("fedavg", FedAvgStep, 1.0),
        ("fedavgm", FedAvgM, 1.0),
        ("fedadam", FedAdam, 0.01),
        ("fedyogi", FedYogi, 0.01),
    ],
)
def test_the_spec_names_the_optimizer_and_its_default_step(
    name: str, kind: type, lr: float
) -> None:
    spec = StrategySpec.model_validate({"name": name})
    optimizer = build_optimizer(spec)
    assert type(optimizer) is kind
    assert optimizer.server_lr == lr
    assert build_optimizer(spec.model_copy(update={"server_lr": 0.5})).server_lr == 0.5
    strategy = build_strategy(spec, mf_spec(num_items=4, dim=2), dp=None)
    assert type(strategy.optimizer) is kind


def test_hyperparameters_reach_the_optimizer() -> None:
    spec = StrategySpec(name="fedyogi", server_lr=0.1, beta1=0.8, beta2=0.9, tau=1e-2)
    optimizer = build_optimizer(spec)
    assert isinstance(optimizer, FedYogi)
    assert (optimizer.beta1, optimizer.beta2, optimizer.tau) == (0.8, 0.9, 1e-2)
    momentum = build_optimizer(StrategySpec(name="fedavgm", server_momentum=0.7))
    assert isinstance(momentum, FedAvgM)
    assert momentum.momentum == 0.7


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedadam", "fedyogi"])
def test_dp_composes_with_every_server_optimizer(name: str) -> None:
    """The optimizer only post-processes the noised mean: any of them keeps the guarantee,
    as long as the mean itself is DP (uniform weights, total normalization)."""
    privacy = PrivacyPolicy.model_validate({"dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}})
    check_dp_policy(
        StrategySpec(name=name, weighting="uniform", normalization="total"),
        privacy,
    )
    with pytest.raises(ValidationFailed, match="weighting"):
        check_dp_policy(StrategySpec(name=name), privacy)
