"""fedrec.sampled_dp: the sampled DP-FedAvg federation of the privacy-frontier bench."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.inprocess import simulate
from fedrec.sampled_dp import (
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
