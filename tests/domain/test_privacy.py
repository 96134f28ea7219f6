"""DP-FedAvg: clipping, CSPRNG noise inside the accumulator, the RDP accountant, policy checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event, rdp
from pydantic import ValidationError

from coordinator.domain.accountant import pld_epsilon
from coordinator.domain.aggregation import FedAvgAccumulator, WeightedMean
from coordinator.domain.errors import ValidationFailed
from coordinator.domain.privacy import (
    DPAggregation,
    check_dp_policy,
    clip_factor,
    epsilon_spent,
    privacy_spent,
    round_allowed,
)
from coordinator.domain.specs import DifferentialPrivacy, PrivacyPolicy, StrategySpec
from participant_sdk.wire import Update, mf_spec
from tests.factories import dp_noise

SPEC = mf_spec(num_items=6, dim=2)
SHAPES = {name: s.shape for name, s in SPEC.items()}
DP_STRATEGY = {"row_normalization": "total", "weighting": "uniform"}


def _dense(seed: int, scale: float = 1.0) -> Update:
    rng = np.random.default_rng(seed)
    tensors = {
        "item_factors": (rng.standard_normal((6, 2)) * scale).astype(np.float32),
        "item_bias": (rng.standard_normal(6) * scale).astype(np.float32),
    }
    return Update(round=1, base_version=0, num_examples=5, tensors=tensors)


def _sparse(rows: list[int], value: float) -> Update:
    return Update(
        round=1,
        base_version=0,
        num_examples=2,
        tensors={
            "item_factors": np.full((len(rows), 2), value, np.float32),
            "item_bias": np.full(len(rows), value, np.float32),
        },
        rows=np.array(rows, np.int64),
    )


def _zeros() -> dict[str, np.ndarray]:
    return {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}


def _dp(clip: float, z: float) -> DPAggregation:
    """One aggregation's DP, as the aggregation job makes it (a fresh CSPRNG seed)."""
    return DPAggregation.fresh(DifferentialPrivacy(clip_norm=clip, noise_multiplier=z))


def _clipped_tensors(update: Update, clip: float) -> dict[str, np.ndarray]:
    """The accumulator's view of one clipped update, through a noiseless DP round of one."""
    acc = FedAvgAccumulator(SPEC, dp=_dp(clip, 0.0), **DP_STRATEGY)  # type: ignore[arg-type]
    acc.add(update)
    return {name: t.astype(np.float64) for name, t in acc.result(_zeros()).items()}


# ---------------------------------------------------------------------------- clipping
class TestClipping:
    def test_norm_is_global_over_all_tensors(self) -> None:
        update = _dense(1)
        flat = np.concatenate([t.ravel().astype(np.float64) for t in update.tensors.values()])
        assert update.norm() == pytest.approx(float(np.linalg.norm(flat)))

    def test_clipped_update_has_norm_c(self) -> None:
        update = _dense(1, scale=10.0)
        assert update.norm() > 1.0
        clipped = _clipped_tensors(update, 1.0)
        norm = math.sqrt(sum(float(np.square(t).sum()) for t in clipped.values()))
        assert norm == pytest.approx(1.0, rel=1e-6)
        # the direction is kept: a uniform scale
        factor = clip_factor(update, 1.0)
        for name, tensor in update.tensors.items():
            np.testing.assert_allclose(clipped[name], tensor * factor, rtol=1e-6)

    def test_update_below_c_is_untouched(self) -> None:
        update = _dense(2, scale=0.01)
        assert update.norm() < 1.0
        assert clip_factor(update, 1.0) == 1.0
        clipped = _clipped_tensors(update, 1.0)
        for name, tensor in update.tensors.items():
            np.testing.assert_array_equal(clipped[name].astype(np.float32), tensor)

    def test_zero_update_is_untouched(self) -> None:
        update = _sparse([], 0.0)
        assert update.norm() == 0.0
        assert clip_factor(update, 0.5) == 1.0

    def test_row_sparse_norm_counts_only_sent_values(self) -> None:
        update = _sparse([1, 4], 3.0)  # 2 rows x (2 factors + 1 bias) = 6 values of 3
        assert update.norm() == pytest.approx(3.0 * math.sqrt(6))
        clipped = _clipped_tensors(update, 1.0)
        expected = 3.0 / (3.0 * math.sqrt(6))
        np.testing.assert_allclose(clipped["item_factors"][[1, 4]], expected, rtol=1e-6)
        np.testing.assert_allclose(clipped["item_bias"][[1, 4]], expected, rtol=1e-6)
        np.testing.assert_array_equal(clipped["item_factors"][[0, 2, 3, 5]], 0.0)

    def test_clipping_bounds_a_participants_share_of_the_round(self) -> None:
        # one huge update and one small: after clipping the huge one weighs at most C
        huge, small = _sparse([0], 1000.0), _sparse([0], 0.1)
        acc = FedAvgAccumulator(SPEC, dp=_dp(1.0, 0.0), **DP_STRATEGY)  # type: ignore[arg-type]
        acc.add(huge)
        acc.add(small)
        out = acc.result(_zeros())
        clipped_huge = 1.0 / math.sqrt(3)  # its 3 values of 1000, scaled to norm 1
        np.testing.assert_allclose(out["item_bias"][0], (clipped_huge + 0.1) / 2, rtol=1e-6)

    def test_clipping_only_with_a_large_c_is_plain_fedavg(self) -> None:
        updates = [_dense(1), _sparse([0, 3], 0.5), _dense(3)]
        plain = FedAvgAccumulator(SPEC, server_lr=3.0, **DP_STRATEGY)  # type: ignore[arg-type]
        clipped = FedAvgAccumulator(
            SPEC,
            server_lr=3.0,
            dp=_dp(1e6, 0.0),
            **DP_STRATEGY,  # type: ignore[arg-type]
        )
        for update in updates:
            plain.add(update)
            clipped.add(update)
        base = {name: np.ones(shape, np.float32) for name, shape in SHAPES.items()}
        for name in SPEC:
            assert plain.result(base)[name].tobytes() == clipped.result(base)[name].tobytes()


# ---------------------------------------------------------------------------- noise
BIG = mf_spec(num_items=4000, dim=7)  # 32,000 noisy coordinates


def _noise_only(
    dp: DPAggregation, *, updates: int, server_lr: float = 1.0, rows: list[int] | None = None
) -> dict[str, np.ndarray]:
    """What the round adds to a zero base when every update is zero."""
    acc = FedAvgAccumulator(
        BIG,
        server_lr=server_lr,
        dp=dp,
        **DP_STRATEGY,  # type: ignore[arg-type]
    )
    for _ in range(updates):
        sent = rows if rows is not None else []
        acc.add(
            Update(
                round=1,
                base_version=0,
                num_examples=1,
                tensors={
                    "item_factors": np.zeros((len(sent), 7), np.float32),
                    "item_bias": np.zeros(len(sent), np.float32),
                },
                rows=np.array(sent, np.int64),
            )
        )
    base = {name: np.zeros(s.shape, np.float32) for name, s in BIG.items()}
    return {name: t.astype(np.float64) for name, t in acc.result(base).items()}


class TestNoise:
    def test_std_is_z_c_over_n(self) -> None:
        clip, z, n, server_lr = 0.5, 1.3, 8, 2.0
        added = _noise_only(_dp(clip, z), updates=n, server_lr=server_lr)
        values = np.concatenate([t.ravel() for t in added.values()])
        expected = server_lr * z * clip / n
        # 32,000 draws: the sample std is within ~0.4 % of the true one (1 sigma)
        assert values.std() == pytest.approx(expected, rel=0.03)
        assert abs(values.mean()) < 4 * expected / math.sqrt(values.size)
        for tensor in added.values():
            assert tensor.std() == pytest.approx(expected, rel=0.05)

    def test_calibration_over_1e5_coordinates_with_a_fixed_denominator(self) -> None:
        # a sampled round divides by the expected cohort m, not by the updates received
        spec = mf_spec(num_items=12_500, dim=7)  # 100,000 noisy coordinates
        clip, z, m = 0.7, 1.1, 25.0
        dp = DPAggregation.fresh(
            DifferentialPrivacy(clip_norm=clip, noise_multiplier=z), denominator=m
        )
        acc = FedAvgAccumulator(spec, dp=dp, **DP_STRATEGY)  # type: ignore[arg-type]
        for _ in range(3):  # fewer than m arrived: the denominator stays m
            acc.add(
                Update(
                    round=1,
                    base_version=0,
                    num_examples=1,
                    tensors={
                        "item_factors": np.zeros((0, 7), np.float32),
                        "item_bias": np.zeros(0, np.float32),
                    },
                    rows=np.array([], np.int64),
                )
            )
        base = {name: np.zeros(s.shape, np.float32) for name, s in spec.items()}
        added = np.concatenate([t.ravel().astype(np.float64) for t in acc.result(base).values()])
        assert added.size == 100_000
        # the sample std of 1e5 normal draws is within ~0.22 % of the true std (1 sigma)
        assert added.std() == pytest.approx(z * clip / m, rel=0.02)
        assert added.std() != pytest.approx(z * clip / 3, rel=0.5)

    def test_an_empty_sample_still_gets_the_noise(self) -> None:
        # an empty Poisson draw releases 0 + noise: the mechanism the accountant assumes
        dp = DPAggregation.fresh(
            DifferentialPrivacy(clip_norm=1.0, noise_multiplier=2.0), denominator=4.0
        )
        acc = FedAvgAccumulator(BIG, dp=dp, **DP_STRATEGY)  # type: ignore[arg-type]
        base = {name: np.zeros(s.shape, np.float32) for name, s in BIG.items()}
        added = np.concatenate([t.ravel() for t in acc.result(base).values()])
        assert added.std() == pytest.approx(2.0 * 1.0 / 4.0, rel=0.03)

    def test_every_coordinate_gets_noise_also_rows_nobody_sent(self) -> None:
        added = _noise_only(_dp(1.0, 1.0), updates=3, rows=[5, 17])
        for tensor in added.values():
            assert np.count_nonzero(tensor) == tensor.size

    def test_matches_the_seeded_draws(self) -> None:
        dp = _dp(0.5, 1.3)
        added = _noise_only(dp, updates=4)
        expected = dp_noise(dp, BIG)
        for name in BIG:
            np.testing.assert_allclose(added[name], expected[name] / 4, rtol=1e-5, atol=1e-9)

    def test_two_aggregations_of_the_same_inputs_draw_independent_noise(self) -> None:
        # nothing stored or derivable: another aggregation of the same round is a new draw
        first = _noise_only(_dp(1.0, 1.0), updates=2)
        again = _noise_only(_dp(1.0, 1.0), updates=2)
        for name in BIG:
            assert first[name].tobytes() != again[name].tobytes()
            assert abs(np.corrcoef(first[name].ravel(), again[name].ravel())[0, 1]) < 0.1

    def test_result_twice_gives_the_same_bytes(self) -> None:
        acc = FedAvgAccumulator(SPEC, dp=_dp(1.0, 2.0), **DP_STRATEGY)  # type: ignore[arg-type]
        acc.add(_dense(1))
        first, second = acc.result(_zeros()), acc.result(_zeros())
        for name in SPEC:
            assert first[name].tobytes() == second[name].tobytes()

    def test_seed_is_fresh_256_bits_and_never_printed(self) -> None:
        seeds = {_dp(1.0, 1.0).seed for _ in range(64)}
        assert len(seeds) == 64
        assert all(len(seed) == 32 for seed in seeds)
        dp = _dp(1.0, 1.0)
        assert dp.seed.hex() not in repr(dp)

    def test_zero_multiplier_adds_no_noise(self) -> None:
        added = _noise_only(_dp(1.0, 0.0), updates=2)
        for tensor in added.values():
            assert not tensor.any()

    def test_dp_refuses_data_dependent_weights(self) -> None:
        for strategy in (
            {"row_normalization": "touched", "weighting": "uniform"},
            {"row_normalization": "total", "weighting": "examples"},
        ):
            with pytest.raises(ValueError, match="dp needs"):
                FedAvgAccumulator(SPEC, dp=_dp(1.0, 1.0), **strategy)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- accountant
def _direct_epsilon(z: float, rounds: int, delta: float) -> float:
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event.GaussianDpEvent(z), rounds)
    return float(accountant.get_epsilon(delta))


class TestAccountant:
    def test_matches_dp_accounting(self) -> None:
        for z, rounds, delta in ((1.0, 40, 1e-5), (0.5, 3, 1e-6), (4.0, 100, 1e-3)):
            assert epsilon_spent(z, rounds, delta) == pytest.approx(
                _direct_epsilon(z, rounds, delta)
            )

    def test_grows_with_rounds(self) -> None:
        epsilons = [epsilon_spent(1.0, t, 1e-5) for t in (1, 2, 10, 100)]
        assert epsilons == sorted(epsilons)
        assert len(set(epsilons)) == len(epsilons)

    def test_shrinks_with_noise(self) -> None:
        epsilons = [epsilon_spent(z, 20, 1e-5) for z in (0.5, 1.0, 2.0, 8.0)]
        assert epsilons == sorted(epsilons, reverse=True)
        assert len(set(epsilons)) == len(epsilons)

    def test_zero_rounds_spend_nothing_and_no_noise_is_unbounded(self) -> None:
        assert epsilon_spent(1.0, 0, 1e-5) == 0.0
        assert epsilon_spent(0.0, 3, 1e-5) == math.inf
        policy = PrivacyPolicy(dp=DifferentialPrivacy(clip_norm=1.0, noise_multiplier=0.0))
        spent = privacy_spent(policy, 3)
        assert spent is not None
        assert spent.epsilon is None
        assert spent.rounds == 3
        assert privacy_spent(PrivacyPolicy(), 3) is None

    def test_round_allowed_until_the_budget(self) -> None:
        z, delta = 2.0, 1e-5
        budget = (pld_epsilon(z, 1.0, 4, delta) + pld_epsilon(z, 1.0, 5, delta)) / 2
        policy = DifferentialPrivacy(clip_norm=1.0, noise_multiplier=z, max_epsilon=budget)
        assert [round_allowed(policy, done) for done in range(6)] == [True] * 4 + [False] * 2
        unlimited = DifferentialPrivacy(clip_norm=1.0, noise_multiplier=z)
        assert round_allowed(unlimited, 10_000)


# ---------------------------------------------------------------------------- policy
class TestPolicy:
    @pytest.mark.parametrize(
        ("dp", "message"),
        [
            ({"clip_norm": 0, "noise_multiplier": 1}, "greater than 0"),
            ({"clip_norm": -1, "noise_multiplier": 1}, "greater than 0"),
            ({"clip_norm": "inf", "noise_multiplier": 1}, "finite"),
            ({"clip_norm": 1, "noise_multiplier": -0.1}, "greater than or equal to 0"),
            ({"clip_norm": 1, "noise_multiplier": 1, "delta": 0}, "greater than 0"),
            ({"clip_norm": 1, "noise_multiplier": 1, "delta": 1}, "less than 1"),
            ({"clip_norm": 1, "noise_multiplier": 1, "max_epsilon": 0}, "greater than 0"),
            ({"clip_norm": 1, "noise_multiplier": 0, "max_epsilon": 5}, "needs noise_multiplier"),
            ({"clip_norm": 1}, "noise_multiplier"),
            ({"clip_norm": 1, "noise_multiplier": 1, "sigma": 2}, "Extra inputs"),
        ],
    )
    def test_invalid_dp_policy(self, dp: dict, message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            PrivacyPolicy.model_validate({"dp": dp})

    def test_defaults(self) -> None:
        policy = PrivacyPolicy.model_validate({"dp": {"clip_norm": 1, "noise_multiplier": 1}})
        assert policy.dp is not None
        assert policy.dp.delta == 1e-5
        assert policy.dp.max_epsilon is None
        assert PrivacyPolicy().dp is None
        # federations stored before DP existed: the JSON column needs no migration
        assert PrivacyPolicy.model_validate({"max_update_norm": None}).dp is None

    def test_strategy_must_be_uniform_total(self) -> None:
        policy = PrivacyPolicy.model_validate({"dp": {"clip_norm": 1, "noise_multiplier": 1}})
        check_dp_policy(StrategySpec(normalization="total", weighting="uniform"), policy)
        check_dp_policy(StrategySpec(), PrivacyPolicy())  # no DP: anything goes
        with pytest.raises(ValidationFailed, match='weighting = "uniform".*normalization'):
            check_dp_policy(StrategySpec(), policy)
        with pytest.raises(ValidationFailed, match='normalization = "total"') as info:
            check_dp_policy(StrategySpec(weighting="uniform"), policy)
        assert "weighting" not in info.value.detail

    def test_budget_below_one_round_is_refused(self) -> None:
        one_round = pld_epsilon(1.0, 1.0, 1, 1e-5)
        policy = PrivacyPolicy.model_validate(
            {"dp": {"clip_norm": 1, "noise_multiplier": 1, "max_epsilon": one_round * 0.9}}
        )
        with pytest.raises(ValidationFailed, match="single round"):
            check_dp_policy(StrategySpec(normalization="total", weighting="uniform"), policy)


class TestUnclippedCount:
    """The mean aggregator counts the updates its DP clipping left alone (adaptive
    clipping's query) from the one norm it computes per update."""

    def test_counts_updates_with_norm_at_most_c(self) -> None:
        mean = WeightedMean(SPEC, row_normalization="total", weighting="uniform", dp=_dp(1.0, 0.0))
        updates = [_dense(1, 0.01), _dense(2, 10.0), _sparse([0, 3], 0.1), _sparse([1], 5.0)]
        for update in updates:
            mean.add(update)
        assert mean.count == 4
        assert mean.unclipped == sum(u.norm() <= 1.0 for u in updates) == 2

    def test_a_norm_exactly_c_is_unclipped(self) -> None:
        update = _sparse([2], 0.5)
        mean = WeightedMean(
            SPEC, row_normalization="total", weighting="uniform", dp=_dp(update.norm(), 0.0)
        )
        mean.add(update)
        assert mean.unclipped == 1

    def test_each_update_norm_is_computed_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[int] = []
        original = Update.norm

        def counted(self: Update) -> float:
            calls.append(1)
            return original(self)

        monkeypatch.setattr(Update, "norm", counted)
        # DP clipping and the strategy's update_norm_clip together: still one norm each
        mean = WeightedMean(
            SPEC, row_normalization="total", weighting="uniform", dp=_dp(1.0, 0.0), clip_norm=0.5
        )
        for seed in range(3):
            mean.add(_dense(seed))
        assert len(calls) == 3
        assert mean.unclipped == 0

    def test_without_dp_nothing_is_counted(self) -> None:
        mean = WeightedMean(SPEC, row_normalization="total", weighting="uniform", clip_norm=0.5)
        mean.add(_dense(1, 0.01))
        assert mean.unclipped == 0
