"""A short in-process federation of either model kind, scored on validation: one arm of
the recipe search (:mod:`fedrec.selection`).

Each round every participant trains its own :func:`~participant_sdk.recsys.trainers.make_trainer`
trainer from the global item tensors, encodes its delta with the wire codec as the SDK
uploads it (row-sparse for BPR, dense for implicit ALS), and the coordinator's own
strategy (:func:`coordinator.domain.strategy.build_strategy`, server state carried from
round to round) folds the decoded updates into the next global model. That is the
product's arithmetic without HTTP, the database and the per-round waits, which would
make a search of several federations cost several federations' wall time.

It only ever sees the training interactions and the validation targets it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from coordinator.domain.backoff import plateau_scale
from coordinator.domain.specs import StrategySpec
from coordinator.domain.strategy import ServerState, build_strategy
from coordinator.domain.validation_curve import smoothed
from fedrec.partition import local_view
from participant_sdk.recsys import BPRTrainer, Interactions, init_item_tensors, loo_ranks
from participant_sdk.recsys.trainers import (
    Trainer,
    TrainerConfig,
    make_trainer,
    prepare_to_score,
    uploads_dense,
)
from participant_sdk.wire import decode_update, encode_update, mf_spec

__all__ = ["ShortFederation"]

F32 = npt.NDArray[np.float32]


class ShortFederation:
    """One candidate's federation over ``groups`` of the training users, advanced round
    by round; :meth:`validate` gives the current model's validation NDCG@10."""

    def __init__(
        self,
        train: Interactions,
        groups: Sequence[npt.NDArray[np.int64]],
        config: TrainerConfig,
        strategy: dict[str, Any],
        *,
        window: int = 1,
        min_delta: float = 0.0,
    ) -> None:
        self.train = train
        self.spec = mf_spec(num_items=train.num_items, dim=config.dim)
        self.strategy = StrategySpec.model_validate(strategy)
        self.tensors: dict[str, F32] = init_item_tensors(
            train.num_items, config.dim, seed=config.seed, scale=0.01
        )
        self.state: ServerState = {}
        # shortens the server step (the coordinator's step_scale): the strategy's
        # plateau_decay reads the validation curve as the coordinator does, smoothed over
        # the deploy policy's window
        self.step_scale = 1.0
        self.curve: dict[int, float] = {}
        self.window, self.min_delta = window, min_delta
        self.rounds = 0
        self.diverged: str | None = None
        # NDCG@10 of each validation user at the best validated round (None: none yet):
        # the recipe search's paired comparison of two arms (fedrec.selection)
        self.best_per_user: npt.NDArray[np.float64] | None = None
        self.participants: list[tuple[npt.NDArray[np.int64], Interactions, Trainer]] = []
        for k, users in enumerate(groups):
            local = local_view(train, users)
            trainer = make_trainer(
                config.replace(seed=config.seed * 1_000_003 + k),
                num_users=int(users.size),
                num_items=train.num_items,
            )
            self.participants.append((users, local, trainer))

    def advance(self) -> None:
        """One round: local training, upload through the wire codec, the server step."""
        if self.diverged is not None:
            return
        strategy = build_strategy(self.strategy, self.spec, dp=None)
        if self.strategy.plateau_decay is not None:
            self.step_scale = plateau_scale(
                self.step_scale,
                smoothed(self.curve, self.window),
                factor=self.strategy.plateau_decay,
                patience=self.strategy.plateau_patience,
                min_delta=self.min_delta,
            )
        added = 0
        for _users, local, trainer in self.participants:
            if not len(local):
                continue
            try:
                # BPR's local rate follows its round schedule, as the SDK's devices do
                rate = (
                    trainer.config.round_learning_rate(self.rounds + 1)
                    if isinstance(trainer, BPRTrainer)
                    else None
                )
                with np.errstate(over="ignore", invalid="ignore"):  # checked below
                    update = trainer.train_round(self.tensors, local, learning_rate=rate)
            except (FloatingPointError, ValueError) as exc:  # a diverged candidate loses
                self.diverged = f"round {self.rounds + 1}: {exc}"
                return
            dense = uploads_dense(trainer)
            payload = encode_update(
                update.delta if dense else update.sparse_delta(),
                round=self.rounds + 1,
                base_version=self.rounds,
                num_examples=update.num_examples,
                rows=None if dense else update.rows,
            )
            strategy.add(decode_update(payload, self.spec))
            added += 1
        if added:
            with np.errstate(over="ignore", invalid="ignore"):
                tensors, self.state = strategy.result(
                    self.tensors, self.state, step_scale=self.step_scale
                )
            if not all(np.isfinite(t).all() for t in tensors.values()):
                self.diverged = f"round {self.rounds + 1}: the server step is not finite"
                return
            self.tensors = tensors
        self.rounds += 1

    def validate(self, valid: Interactions) -> float:
        """Validation NDCG@10 of the current global model (-inf once diverged).

        Each participant's users are scored with their own private factors, as the
        participants report validation in the product; only ``valid`` is ranked."""
        if self.diverged is not None:
            return float("-inf")
        dim = self.spec["item_factors"].shape[1]
        users_factors = np.zeros((self.train.num_users, dim), dtype=np.float32)
        for users, local, trainer in self.participants:
            prepare_to_score(trainer, self.tensors, local)
            users_factors[users] = trainer.user_factors
        q, b = self.tensors["item_factors"], self.tensors["item_bias"]

        def score(users: npt.NDArray[np.int64]) -> F32:
            return np.asarray(users_factors[users] @ q.T + b[None, :], dtype=np.float32)

        if not np.isfinite(users_factors).all():
            self.diverged = f"round {self.rounds}: user factors are not finite"
            return float("-inf")
        with np.errstate(over="ignore", invalid="ignore"):  # huge but finite factors
            ranks = loo_ranks(score, self.train, valid)
        # evaluate_loo's NDCG@10, kept per user
        per_user = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
        value = float(per_user.mean()) if per_user.size else 0.0
        value = value if np.isfinite(value) else float("-inf")
        if value > max(self.curve.values(), default=float("-inf")):
            self.best_per_user = per_user
        self.curve[self.rounds] = value
        return value
