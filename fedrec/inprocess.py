"""In-process federated simulation on the real pieces (no HTTP): the quality benchmark's
federation (``bench.quality``, ``bench.federation_sim``).

Each round, every participant trains a :class:`~participant_sdk.recsys.model.BPRTrainer`
from the current global item tensors, encodes its row-sparse delta with
:func:`participant_sdk.wire.encode_update`, the "server" decodes it with
:func:`participant_sdk.wire.decode_update` against the model spec and folds it into
a :class:`coordinator.domain.aggregation.FedAvgAccumulator`; the accumulator's result
is the next global model. A centralized run is the special case of one participant
holding every user with ``server_lr = 1``: the same code path and the same trainer.
With ``dp_clip`` the accumulator clips and noises each round exactly as the coordinator
does (:mod:`coordinator.domain.privacy`); :func:`epsilon_spent` is the RDP bound for
everyone in every round (the coordinator itself reports the PLD accountant's epsilon, which is
lower: :mod:`coordinator.domain.accountant`).

:func:`aggregate` runs one round of the coordinator's strategy (any aggregator, robust
ones included) over decoded updates: the poisoning benchmark's server (``bench.poisoning``).

It lives in the application package, above the coordinator, so that the benchmarks
reach the aggregation code through it rather than through coordinator internals.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from coordinator.domain.aggregation import FedAvgAccumulator, RowNormalization
from coordinator.domain.privacy import DPAggregation, epsilon_spent
from coordinator.domain.specs import StrategySpec
from coordinator.domain.strategy import Strategy, build_strategy
from fedrec.partition import local_view
from participant_sdk.recsys.data import Interactions
from participant_sdk.recsys.model import BPRConfig, BPRTrainer, init_item_tensors
from participant_sdk.wire import (
    Update,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
    mf_spec,
)

__all__ = ["FedResult", "RowNormalization", "aggregate", "epsilon_spent", "simulate"]

F32 = npt.NDArray[np.float32]


@dataclass
class FedResult:
    """Outcome of one simulated federation."""

    item_tensors: dict[str, F32]
    user_factors: F32
    bytes_per_round: list[int] = field(default_factory=list)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    seconds: float = 0.0
    # global L2 norm of every update, per round (before any clipping)
    update_norms: list[list[float]] = field(default_factory=list)

    def score(self, users: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Scores of global users against the final global model."""
        q = self.item_tensors["item_factors"]
        b = self.item_tensors["item_bias"]
        return np.asarray(self.user_factors[users] @ q.T + b[None, :], dtype=np.float32)


def simulate(
    train: Interactions,
    groups: Sequence[npt.NDArray[np.int64]],
    config: BPRConfig,
    *,
    rounds: int,
    server_lr: float = 1.0,
    normalization: RowNormalization = "touched",
    lr_decay_per_round: float = 1.0,
    refit_epochs: int = 0,
    server_momentum: float = 0.0,
    uniform_weights: bool = False,
    sparse: bool = True,
    eval_every: int = 0,
    eval_fn: Callable[[FedResult], dict[str, float]] | None = None,
    progress: Callable[[str], None] | None = None,
    dp_clip: float | None = None,
    dp_noise: float = 0.0,
    dp_secret: bytes = b"bench-secret",
    server_optimizer: Mapping[str, Any] | None = None,
    encoding: str = "float32",
) -> FedResult:
    """Run ``rounds`` FedAvg rounds of local BPR over the participants in ``groups``.

    ``config.epochs`` is the number of local epochs per round. The learning rate of
    round ``r`` (0-based) is ``config.learning_rate * lr_decay_per_round ** r``.
    ``normalization`` is the accumulator's ``row_normalization``. ``refit_epochs`` > 0
    ends with that many local user-only epochs (items frozen) on the final global model,
    the local personalisation step a participant runs after the last round; evaluations
    at checkpoints apply it to a copy of the user factors, so training is unchanged.
    ``server_momentum`` > 0 is FedAvgM (bench-only): the server keeps a velocity
    ``v = momentum * v + (aggregate - base)`` and moves the model by ``v``.
    ``uniform_weights`` is the accumulator's ``weighting="uniform"`` (every update
    weighs 1 instead of its ``num_examples``).
    ``dp_clip`` turns on DP-FedAvg: updates clipped to that L2 norm, noise of std
    ``dp_noise * dp_clip`` on the sum, seeded from ``dp_secret`` and the round so that a
    benchmark is repeatable (the coordinator draws each round's seed from a CSPRNG
    instead; needs ``normalization="total"`` and ``uniform_weights``).
    ``server_optimizer`` (StrategySpec fields, e.g. ``{"name": "fedadam", "server_lr":
    0.01}``) runs the coordinator's own strategy instead, its state carried from round
    to round as the coordinator stores it (float32); ``server_lr`` is then ignored.
    ``encoding`` is the federation's ``transport.encoding``: participants download the
    model and upload their deltas in it, the server aggregates and keeps float32.
    """
    start = time.perf_counter()
    spec = mf_spec(num_items=train.num_items, dim=config.dim)
    global_tensors = init_item_tensors(
        train.num_items, config.dim, seed=config.seed, scale=config.init_scale
    )
    participants: list[tuple[npt.NDArray[np.int64], Interactions, BPRTrainer]] = []
    for k, users in enumerate(groups):
        local = local_view(train, users)
        trainer = BPRTrainer(
            num_users=int(users.size),
            num_items=train.num_items,
            config=config.replace(seed=config.seed * 1_000_003 + k),
        )
        participants.append((users, local, trainer))
    result = FedResult(item_tensors=global_tensors, user_factors=_gather(participants, train))
    velocity = {name: np.zeros(t.shape, dtype=np.float64) for name, t in global_tensors.items()}
    server_state: dict[str, npt.NDArray[np.float32]] = {}
    for r in range(rounds):
        lr = config.learning_rate * lr_decay_per_round**r
        dp = (
            DPAggregation(dp_clip, dp_noise, hashlib.sha256(dp_secret + b"/%d" % (r + 1)).digest())
            if dp_clip is not None
            else None
        )
        acc: FedAvgAccumulator | Strategy = FedAvgAccumulator(
            spec,
            server_lr=server_lr,
            row_normalization=normalization,
            weighting="uniform" if uniform_weights else "examples",
            dp=dp,
        )
        if server_optimizer is not None:
            weighting = "uniform" if uniform_weights else "examples"
            settings = {**server_optimizer, "normalization": normalization, "weighting": weighting}
            acc = build_strategy(StrategySpec.model_validate(settings), spec, dp=dp)
        norms: list[float] = []
        sent = 0
        # what participants download: the round's base in the federation's encoding
        downloaded = (
            global_tensors
            if encoding == "float32"
            else decode_model(encode_model(global_tensors, encoding), encoding)
        )
        for _users, local, trainer in participants:
            if len(local) == 0:
                continue
            update = trainer.train_round(downloaded, local, learning_rate=lr)
            if sparse:
                payload = encode_update(
                    update.sparse_delta(),
                    round=r + 1,
                    base_version=r,
                    num_examples=update.num_examples,
                    rows=update.rows,
                    encoding=encoding,
                )
            else:
                payload = encode_update(
                    update.delta,
                    round=r + 1,
                    base_version=r,
                    num_examples=update.num_examples,
                    encoding=encoding,
                )
            sent += len(payload)
            decoded = decode_update(payload, spec, encoding=encoding)
            norms.append(decoded.norm())
            acc.add(decoded)
        result.update_norms.append(norms)
        if isinstance(acc, Strategy):
            aggregate, server_state = acc.result(global_tensors, server_state)
        else:
            aggregate = acc.result(global_tensors)
        if server_momentum > 0.0:
            for name, value in aggregate.items():
                base64 = global_tensors[name].astype(np.float64)
                velocity[name] = server_momentum * velocity[name] + (value - base64)
                aggregate[name] = (base64 + velocity[name]).astype(np.float32)
        global_tensors = aggregate
        result.bytes_per_round.append(sent)
        result.item_tensors = global_tensors
        if eval_fn is not None and eval_every and ((r + 1) % eval_every == 0 or r + 1 == rounds):
            saved = [(t.user_factors.copy(), t.steps) for _u, _l, t in participants]
            _refit(participants, global_tensors, refit_epochs, lr)
            result.user_factors = _gather(participants, train)
            for (_u, _l, t), (factors, steps) in zip(participants, saved, strict=True):
                t.user_factors, t.steps = factors, steps
            metrics = eval_fn(result)
            result.history.append((r + 1, metrics))
            if progress is not None:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                progress(
                    f"    round {r + 1}/{rounds}: {shown} ({time.perf_counter() - start:.0f}s)"
                )
    if rounds:
        _refit(participants, global_tensors, refit_epochs, lr)
    result.user_factors = _gather(participants, train)
    result.seconds = time.perf_counter() - start
    return result


def aggregate(
    updates: Sequence[Update],
    base: Mapping[str, F32],
    strategy: Mapping[str, Any],
) -> dict[str, F32]:
    """The next model after one round: the coordinator's strategy (``strategy`` holds
    ``StrategySpec`` fields, e.g. ``{"aggregator": "median"}``; the spec's defaults, its
    ``update_norm_clip`` included, fill the rest) over ``updates`` in the given order.
    The server optimizer must be stateless (``fedavg``, the default)."""
    spec = mf_spec(num_items=base["item_factors"].shape[0], dim=base["item_factors"].shape[1])
    built = build_strategy(StrategySpec.model_validate(dict(strategy)), spec, dp=None)
    for update in updates:
        built.add(update)
    return built.result(base, {})[0]


def _refit(
    participants: Sequence[tuple[npt.NDArray[np.int64], Interactions, BPRTrainer]],
    item_tensors: dict[str, F32],
    epochs: int,
    learning_rate: float,
) -> None:
    """User-only local epochs against ``item_tensors`` (no upload)."""
    if epochs <= 0:
        return
    for _users, local, trainer in participants:
        if len(local):
            trainer.train_round(
                item_tensors, local, epochs=epochs, learning_rate=learning_rate, update_items=False
            )


def _gather(
    participants: Sequence[tuple[npt.NDArray[np.int64], Interactions, BPRTrainer]],
    train: Interactions,
) -> F32:
    """Assemble every participant's private user factors into one global matrix.

    Only the offline evaluation does this; in a real federation each participant
    evaluates its own users.
    """
    dim = participants[0][2].config.dim if participants else 0
    out = np.zeros((train.num_users, dim), dtype=np.float32)
    for users, _local, trainer in participants:
        out[users] = trainer.user_factors
    return out
