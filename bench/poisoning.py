"""Poisoning benchmark: how far hostile participants move the aggregate, per aggregator.

``python -m bench.poisoning`` prints two tables (README, "Robust aggregation"), each a
federation of real local BPR training on the synthetic data (``fedrec.synthetic``), its
rounds aggregated by the coordinator's own strategy (``fedrec.inprocess.aggregate``),
once without and once with the attack, for every defence:

1. **Byzantine**: 50 participants, 10 of which send their honest delta sign-flipped and
   scaled x100. Reported: the aggregate's L2 distance to the mean of the honest updates
   alone (same round, same base), relative to that honest mean's own norm, averaged
   over the rounds.
2. **Item promotion** (PipAttack / PIECK style): 5 % of the participants train honestly
   but also push one cold item (the least popular) towards the centroid of the popular
   items they mine from the global model (the 20 largest biases), boosted to outweigh
   the row's honest senders. Reported: the target item's mean rank over the honest
   users (1 = top; the users' own training items excluded) and ER@10, the share of
   users whose top 10 holds it, after the last round.

Everything is seeded: the same run prints the same figures.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrec.inprocess import aggregate
from fedrec.partition import local_view, partition_users
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys.data import Interactions
from participant_sdk.recsys.model import BPRConfig, BPRTrainer, init_item_tensors
from participant_sdk.wire import Update, decode_update, encode_update, mf_spec

__all__ = ["DEFENCES", "Outcome", "byzantine", "main", "promotion"]

F32 = npt.NDArray[np.float32]
Attack = Callable[[Update, Mapping[str, F32]], Update]

# the strategy settings each row of the tables runs (StrategySpec fields)
DEFENCES: dict[str, dict[str, Any]] = {
    "mean, no clip (no defence)": {"aggregator": "mean", "update_norm_clip": None},
    "mean, default clip 10,000": {"aggregator": "mean"},
    "median": {"aggregator": "median"},
    "trimmed_mean 0.1": {"aggregator": "trimmed_mean", "trim_fraction": 0.1},
    "trimmed_mean 0.2": {"aggregator": "trimmed_mean", "trim_fraction": 0.2},
    "multi_krum 0.2": {"aggregator": "multi_krum", "krum_byzantine_fraction": 0.2},
}
HONEST_MEAN = DEFENCES["mean, no clip (no defence)"]
CONFIG = BPRConfig(dim=16, learning_rate=0.05, epochs=1, init_scale=0.1)
POPULAR = 20  # items the promotion attacker mines as "popular"
BOOST = 20.0  # how far past the popular centroid the attacker pushes its target row


@dataclass(frozen=True)
class Outcome:
    """One federation: the aggregate's distance to the honest mean per round, and the
    target item's standing at the end (when there is a target)."""

    distances: list[float]
    target_rank: float | None = None
    target_er10: float | None = None


def _norm(tensors: Mapping[str, npt.NDArray[np.floating[Any]]]) -> float:
    return float(np.sqrt(sum(np.square(t, dtype=np.float64).sum() for t in tensors.values())))


def federation(
    data: Interactions,
    groups: Sequence[npt.NDArray[np.int64]],
    *,
    strategy: Mapping[str, Any],
    rounds: int,
    hostile: Mapping[int, Attack],
    target: int | None = None,
) -> Outcome:
    """Run ``rounds`` rounds; participant ``k`` in ``hostile`` sends ``hostile[k](update)``."""
    spec = mf_spec(num_items=data.num_items, dim=CONFIG.dim)
    model = init_item_tensors(data.num_items, CONFIG.dim, seed=0, scale=CONFIG.init_scale)
    locals_ = [local_view(data, users) for users in groups]
    trainers = [
        BPRTrainer(
            num_users=int(users.size), num_items=data.num_items, config=CONFIG.replace(seed=k)
        )
        for k, users in enumerate(groups)
    ]
    distances = []
    for r in range(rounds):
        updates, honest = [], []
        for k, (local, trainer) in enumerate(zip(locals_, trainers, strict=True)):
            trained = trainer.train_round(model, local)
            payload = encode_update(
                trained.sparse_delta(),
                round=r + 1,
                base_version=r,
                num_examples=trained.num_examples,
                rows=trained.rows,
            )
            update = decode_update(payload, spec)  # the coordinator's validation
            if k in hostile:
                update = hostile[k](update, model)
            else:
                honest.append(update)
            updates.append(update)
        new = aggregate(updates, model, strategy)
        reference = aggregate(honest, model, HONEST_MEAN)
        step = {name: reference[name].astype(np.float64) - model[name] for name in model}
        gap = {name: new[name].astype(np.float64) - reference[name] for name in model}
        distances.append(_norm(gap) / max(_norm(step), 1e-30))
        model = new
    if target is None:
        return Outcome(distances)
    rank, er10 = _target_standing(data, groups, trainers, model, target, set(hostile))
    return Outcome(distances, rank, er10)


def _target_standing(
    data: Interactions,
    groups: Sequence[npt.NDArray[np.int64]],
    trainers: Sequence[BPRTrainer],
    model: Mapping[str, F32],
    target: int,
    hostile: set[int],
) -> tuple[float, float]:
    """Mean rank of ``target`` over the honest participants' users, and ER@10."""
    ranks = []
    for k, (users, trainer) in enumerate(zip(groups, trainers, strict=True)):
        if k in hostile:
            continue
        scores = trainer.user_factors.astype(np.float64) @ model["item_factors"].T.astype(
            np.float64
        ) + model["item_bias"].astype(np.float64)
        seen = np.isin(data.users, users)
        local_user = np.searchsorted(users, data.users[seen])
        scores[local_user, data.items[seen]] = -np.inf  # rank among unseen items
        target_scores = scores[:, target : target + 1]
        ranks.append(1 + (scores > target_scores).sum(axis=1))
    all_ranks = np.concatenate(ranks)
    return float(all_ranks.mean()), float((all_ranks <= 10).mean())


def sign_flip(scale: float) -> Attack:
    """The Byzantine participant: its honest delta times ``-scale``."""

    def attack(update: Update, _model: Mapping[str, F32]) -> Update:
        tensors = {name: (-scale * t).astype(np.float32) for name, t in update.tensors.items()}
        return Update(update.round, update.base_version, update.num_examples, tensors, update.rows)

    return attack


def promote(target: int) -> Attack:
    """PIECK-style promotion: keep the honest delta, and move ``target``'s row to BOOST
    times the way to the popular items' centroid (mined from the global model)."""

    def attack(update: Update, model: Mapping[str, F32]) -> Update:
        factors, bias = model["item_factors"], model["item_bias"]
        popular = np.argsort(-bias, kind="stable")[:POPULAR]
        push_q = BOOST * (factors[popular].mean(axis=0) - factors[target])
        push_b = BOOST * (bias[popular].max() - bias[target])
        assert update.rows is not None
        rows = np.union1d(update.rows, [target]).astype(np.int64)
        at = np.searchsorted(rows, update.rows)
        q = np.zeros((rows.size, factors.shape[1]), np.float32)
        b = np.zeros(rows.size, np.float32)
        q[at], b[at] = update.tensors["item_factors"], update.tensors["item_bias"]
        i = int(np.searchsorted(rows, target))
        q[i], b[i] = push_q, push_b
        tensors = {"item_factors": q, "item_bias": b}
        return Update(update.round, update.base_version, update.num_examples, tensors, rows)

    return attack


def byzantine(
    *,
    participants: int = 50,
    hostile: int = 10,
    rounds: int = 5,
    scale: float = 100.0,
    seed: int = 0,
) -> dict[str, tuple[Outcome, Outcome]]:
    """Per defence: (no attack, attack) of the Byzantine scenario."""
    data = make_synthetic(num_users=participants * 20, num_items=500, seed=seed)
    groups = partition_users(data, "iid", participants, seed=seed)
    attackers = dict.fromkeys(range(participants - hostile, participants), sign_flip(scale))
    return {
        name: (
            federation(data, groups, strategy=strategy, rounds=rounds, hostile={}),
            federation(data, groups, strategy=strategy, rounds=rounds, hostile=attackers),
        )
        for name, strategy in DEFENCES.items()
    }


def promotion(
    *, participants: int = 100, share: float = 0.05, rounds: int = 10, seed: int = 0
) -> tuple[int, dict[str, tuple[Outcome, Outcome]]]:
    """The target item, and per defence: (no attack, attack) of the promotion scenario."""
    data = make_synthetic(num_users=participants * 10, num_items=500, seed=seed)
    groups = partition_users(data, "iid", participants, seed=seed)
    counts = np.bincount(data.items, minlength=data.num_items)
    target = int(np.argmin(counts))  # the coldest item (first of the least popular)
    count = max(1, round(share * participants))
    attackers = dict.fromkeys(range(participants - count, participants), promote(target))

    def run(strategy: dict[str, Any], hostile: Mapping[int, Attack]) -> Outcome:
        return federation(
            data, groups, strategy=strategy, rounds=rounds, hostile=hostile, target=target
        )

    return target, {
        name: (run(strategy, {}), run(strategy, attackers)) for name, strategy in DEFENCES.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds per federation")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print("Byzantine: 50 participants, 10 send their delta x -100 (relative distance of the")
    print("aggregate to the honest updates' mean, averaged over rounds; last round)\n")
    print("| aggregator | no attack | attack | attack, last round |")
    print("|---|---:|---:|---:|")
    for name, (clean, attacked) in byzantine(rounds=args.rounds).items():
        print(
            f"| {name} | {np.mean(clean.distances):.3g} | {np.mean(attacked.distances):.3g} "
            f"| {attacked.distances[-1]:.3g} |"
        )
    target, table = promotion(rounds=args.rounds)
    print(f"\nPromotion: 100 participants, 5 push cold item {target} (of 500); its mean rank")
    print("over the honest users (1 = top) and ER@10 after the last round\n")
    print("| aggregator | rank, no attack | rank, attack | ER@10, no attack | ER@10, attack |")
    print("|---|---:|---:|---:|---:|")
    for name, (clean, attacked) in table.items():
        print(
            f"| {name} | {clean.target_rank:.1f} | {attacked.target_rank:.1f} "
            f"| {clean.target_er10:.3f} | {attacked.target_er10:.3f} |"
        )
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
