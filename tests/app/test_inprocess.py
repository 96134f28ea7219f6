"""The in-process federation (the quality bench's): real trainer, wire codec and FedAvg
accumulator."""

from __future__ import annotations

import numpy as np

from fedrec.inprocess import simulate
from fedrec.partition import partition_users
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import (
    BPRConfig,
    BPRTrainer,
    PopularityModel,
    evaluate_loo,
    init_item_tensors,
    leave_one_out,
)

CFG = BPRConfig(dim=16, learning_rate=0.05, reg=0.01, epochs=1, batch_size=128, seed=0)


def test_one_participant_equals_centralized_training() -> None:
    data = make_synthetic(num_users=60, num_items=80, seed=3)
    groups = [np.arange(data.num_users, dtype=np.int64)]
    fed = simulate(data, groups, CFG, rounds=3)
    # the simulation derives participant k's seed as seed * 1_000_003 + k
    trainer = BPRTrainer(
        num_users=data.num_users, num_items=data.num_items, config=CFG.replace(seed=0)
    )
    tensors = init_item_tensors(data.num_items, CFG.dim, seed=0, scale=CFG.init_scale)
    for _ in range(3):
        up = trainer.train_round(tensors, data)
        tensors = {"item_factors": up.item_factors, "item_bias": up.item_bias}
    assert np.allclose(fed.item_tensors["item_factors"], tensors["item_factors"], atol=1e-6)
    assert np.allclose(fed.user_factors, trainer.user_factors)


def test_per_user_federation_learns_with_server_lr() -> None:
    data = make_synthetic(num_users=150, num_items=120, seed=4)
    split = leave_one_out(data)
    groups = partition_users(split.train, "per-user")
    fed = simulate(split.train, groups, CFG.replace(epochs=2), rounds=15, server_lr=20.0)
    pop = evaluate_loo(PopularityModel(split.train).score, split.train, split.valid)
    got = evaluate_loo(fed.score, split.train, split.valid)
    assert got["ndcg@10"] > 1.5 * pop["ndcg@10"]
    assert len(fed.bytes_per_round) == 15
    assert all(b > 0 for b in fed.bytes_per_round)


def test_server_optimizer_runs_the_coordinators_strategy() -> None:
    data = make_synthetic(num_users=60, num_items=80, seed=5)
    groups = partition_users(data, "iid", 3, seed=0)
    plain = simulate(data, groups, CFG, rounds=2, server_lr=2.0)
    same = simulate(data, groups, CFG, rounds=2, server_optimizer={"server_lr": 2.0})
    for name, tensor in plain.item_tensors.items():
        np.testing.assert_array_equal(same.item_tensors[name], tensor)
    adam = simulate(data, groups, CFG, rounds=2, server_optimizer={"name": "fedadam"})
    assert not np.array_equal(adam.item_tensors["item_bias"], plain.item_tensors["item_bias"])
    assert np.isfinite(adam.item_tensors["item_factors"]).all()
