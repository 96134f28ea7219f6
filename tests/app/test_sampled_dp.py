"""fedrec.sampled_dp: the sampled DP-FedAvg federation of the privacy-frontier bench."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.domain.privacy import update_noise_multiplier
from fedrec.inprocess import simulate
from fedrec.sampled_dp import (
    AdaptiveClipping,
    SampledDP,
    noise_for_epsilon,
    per_user_views,
    pld_epsilon,
    simulate_sampled,
)
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys.data import Interactions
from participant_sdk.recsys.model import BPRConfig

CONFIG = BPRConfig(dim=4, learning_rate=0.05, epochs=1, negatives=1, batch_size=64)
FEDAVG = {"name": "fedavg", "server_lr": 20.0}


@pytest.fixture(scope="module")
def data() -> Interactions:
    return make_synthetic(num_users=40, num_items=30, interactions_per_user=(5, 15), seed=3)


def test_per_user_views_hold_each_users_interactions(data: Interactions) -> None:
    views = per_user_views(data)
    assert len(views) == data.num_users
    for user in (0, 7, 39):
        mine = np.sort(data.items[data.users == user])
        assert np.array_equal(np.sort(views[user].items), mine)
        assert set(views[user].users.tolist()) == {0}


def test_full_participation_without_dp_is_the_per_user_federation(data: Interactions) -> None:
    # q = 1 divides by the whole population, exactly what the per-user federation does
    sampled = simulate_sampled(data, CONFIG, SampledDP(1.0, 2), strategy=FEDAVG, refit_epochs=0)
    groups = [np.array([u], dtype=np.int64) for u in range(data.num_users)]
    plain = simulate(
        data,
        groups,
        CONFIG,
        rounds=2,
        server_lr=20.0,
        normalization="total",
        uniform_weights=True,
    )
    for name, tensor in plain.item_tensors.items():
        np.testing.assert_allclose(sampled.item_tensors[name], tensor, rtol=1e-5, atol=1e-7)
    assert sampled.cohort_sizes == [data.num_users, data.num_users]


def test_noise_is_z_c_over_the_expected_cohort(data: Interactions) -> None:
    # a clip norm no update reaches: the only difference is the noise, std z C / (q N)
    # per coordinate of the mean, times server_lr
    huge, z, rate = 1e4, 1e-4, 0.5
    runs = [
        simulate_sampled(
            data, CONFIG, SampledDP(rate, 1, huge, noise), strategy=FEDAVG, refit_epochs=0
        )
        for noise in (0.0, z)
    ]
    difference = runs[1].item_tensors["item_factors"] - runs[0].item_tensors["item_factors"]
    expected = 20.0 * z * huge / (rate * data.num_users)
    assert difference.std() == pytest.approx(expected, rel=0.25)  # 120 coordinates
    assert runs[0].clipped_fraction == [0.0]


def test_sampling_draws_about_q_n_per_round(data: Interactions) -> None:
    result = simulate_sampled(
        data, CONFIG, SampledDP(0.25, 12), strategy=FEDAVG, refit_epochs=0, seed=1
    )
    assert len(result.cohort_sizes) == 12
    assert 0.1 * 40 < np.mean(result.cohort_sizes) < 0.4 * 40
    assert len(set(result.cohort_sizes)) > 1  # Poisson: the cohort size varies


def test_noise_for_epsilon_meets_the_target_from_below() -> None:
    z = noise_for_epsilon(4.0, 0.1, 20, 1e-5)
    assert pld_epsilon(z, 0.1, 20, 1e-5) <= 4.0
    assert pld_epsilon(z * 0.98, 0.1, 20, 1e-5) > 4.0 * 0.95
    assert noise_for_epsilon(1.0, 0.1, 20, 1e-5) > z  # less epsilon, more noise


def test_noise_needs_a_clip_norm() -> None:
    with pytest.raises(ValueError, match="clip_norm"):
        SampledDP(0.5, 3, None, 1.0)
    with pytest.raises(ValueError, match="sampling_rate"):
        SampledDP(0.0, 3)


def test_adaptive_clipping_noise_is_z_delta_c_over_the_expected_cohort() -> None:
    # sigma_b just above z / 2 leaves the updates a much larger z_delta than z, so the
    # measured std tells the two apart; a C no update reaches isolates the noise
    wide = make_synthetic(num_users=40, num_items=200, interactions_per_user=(5, 15), seed=4)
    config = CONFIG.replace(dim=63)  # 200 x 64 = 12,800 coordinates of the item tensors
    huge, z, rate = 1e4, 1e-4, 0.5
    adaptive = AdaptiveClipping(clipped_count_stddev=0.55 * z)
    z_delta = update_noise_multiplier(z, 0.55 * z)
    assert z_delta > 2 * z
    runs = [
        simulate_sampled(
            wide,
            config,
            SampledDP(rate, 1, huge, noise, adaptive_clipping=adaptive),
            strategy=FEDAVG,
            refit_epochs=0,
        )
        for noise in (0.0, z)
    ]
    assert runs[1].update_noise_multiplier == pytest.approx(z_delta)
    # the pair composes to one Gaussian mechanism of multiplier z: what the accountant sees
    assert (z_delta**-2 + (2 * 0.55 * z) ** -2) ** -0.5 == pytest.approx(z)
    difference = np.concatenate(
        [
            (runs[1].item_tensors[name] - runs[0].item_tensors[name]).ravel()
            for name in ("item_factors", "item_bias")
        ]
    )
    expected = 20.0 * z_delta * huge / (rate * wide.num_users)
    assert difference.size == 200 * 64
    assert difference.std() == pytest.approx(expected, rel=0.03)


def test_adaptive_clipping_moves_c_by_the_noised_unclipped_fraction(data: Interactions) -> None:
    # no update reaches C = 1e4, so every round's count is the whole cohort; with a tiny
    # sigma_b the fraction is cohort / (q N) and C follows the paper's geometric step
    adaptive = AdaptiveClipping(target_quantile=0.5, learning_rate=0.2, clipped_count_stddev=1e-9)
    rate = 0.5
    result = simulate_sampled(
        data,
        CONFIG,
        SampledDP(rate, 4, 1e4, 0.0, adaptive_clipping=adaptive),
        strategy=FEDAVG,
        refit_epochs=0,
    )
    assert result.clipped_fraction == [0.0] * 4
    expected_c = [1e4]
    for cohort in result.cohort_sizes[:-1]:
        fraction = cohort / (rate * data.num_users)
        expected_c.append(expected_c[-1] * math.exp(-0.2 * (fraction - 0.5)))
    assert result.clip_norms == pytest.approx(expected_c, rel=1e-6)
    # a C below every update: all are clipped, and C grows towards the median
    small = simulate_sampled(
        data,
        CONFIG,
        SampledDP(rate, 3, 1e-6, 0.0, adaptive_clipping=adaptive),
        strategy=FEDAVG,
        refit_epochs=0,
    )
    assert small.clipped_fraction == [1.0] * 3
    assert small.clip_norms == pytest.approx([1e-6, 1e-6 * math.exp(0.1), 1e-6 * math.exp(0.2)])


def test_fixed_clipping_counts_the_clipped_updates(data: Interactions) -> None:
    # a C between the update norms: some updates are clipped, and the count matches the
    # norms of the same round's updates without clipping (C huge, same seeds)
    runs = [
        simulate_sampled(
            data, CONFIG, SampledDP(1.0, 1, clip, 0.0), strategy=FEDAVG, refit_epochs=0
        )
        for clip in (1e-6, 1e4)
    ]
    assert runs[0].clipped_fraction == [1.0]
    assert runs[1].clipped_fraction == [0.0]
    assert runs[0].clip_norms == [1e-6]


def test_a_server_optimizer_post_processes_the_noised_mean(data: Interactions) -> None:
    # FedAvgM with momentum 0 is FedAvg, same noise (same seeds); momentum changes the path
    dp = SampledDP(0.5, 3, 0.5, 1.0)
    runs = [
        simulate_sampled(data, CONFIG, dp, strategy=strategy, refit_epochs=0)
        for strategy in (
            FEDAVG,
            {"name": "fedavgm", "server_lr": 20.0, "server_momentum": 0.0},
            {"name": "fedavgm", "server_lr": 20.0, "server_momentum": 0.9},
        )
    ]
    plain, no_momentum, momentum = (r.item_tensors["item_factors"] for r in runs)
    np.testing.assert_allclose(no_momentum, plain, rtol=1e-5, atol=1e-7)
    assert not np.allclose(momentum, plain)


def test_adaptive_clipping_needs_a_first_c_and_room_for_the_updates_noise() -> None:
    with pytest.raises(ValueError, match="initial clip_norm"):
        SampledDP(0.5, 3, None, adaptive_clipping=AdaptiveClipping())
    with pytest.raises(ValueError, match="clipped_count_stddev"):
        SampledDP(0.5, 3, 1.0, 1.0, adaptive_clipping=AdaptiveClipping(clipped_count_stddev=0.4))
