"""One local trainer per federation model kind: ``mf`` (BPR) and ``ials`` (implicit ALS).

Both trainers share one public shape (``train_round``, ``score``, ``save``/``load``), so
the participant loop and the simulation hold either. The differences they must know
about are here: which config goes with which kind, which kind uploads dense deltas, and
that implicit ALS solves its user factors for a version before scoring it.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from .data import Interactions
from .ials import IALSConfig, IALSTrainer
from .model import BPRConfig, BPRTrainer

__all__ = [
    "ModelKind",
    "Trainer",
    "TrainerConfig",
    "config_for",
    "make_trainer",
    "prepare_to_score",
    "uploads_dense",
]

ModelKind = Literal["mf", "ials"]
Trainer: TypeAlias = BPRTrainer | IALSTrainer
TrainerConfig: TypeAlias = BPRConfig | IALSConfig


def config_for(kind: str, config: TrainerConfig | None, *, dim: int) -> TrainerConfig:
    """The config of ``kind`` with the federation's ``dim``: ``config`` or the defaults.

    Raises ``ValueError`` when ``config`` belongs to the other kind, rather than train a
    model the federation does not hold.
    """
    if kind == "ials":
        if isinstance(config, BPRConfig):
            raise ValueError("the federation's model kind is 'ials': pass an IALSConfig")
        return (config or IALSConfig()).replace(dim=dim)
    if kind == "mf":
        if isinstance(config, IALSConfig):
            raise ValueError("the federation's model kind is 'mf' (BPR): pass a BPRConfig")
        return (config or BPRConfig()).replace(dim=dim)
    raise ValueError(f"model kind {kind!r} is not supported by this SDK (mf, ials)")


def make_trainer(config: TrainerConfig, *, num_users: int, num_items: int) -> Trainer:
    """The trainer that goes with ``config``."""
    if isinstance(config, IALSConfig):
        return IALSTrainer(num_users=num_users, num_items=num_items, config=config)
    return BPRTrainer(num_users=num_users, num_items=num_items, config=config)


def uploads_dense(trainer: Trainer) -> bool:
    """Whether every item row changes each round (implicit ALS: the negatives move all)."""
    return isinstance(trainer, IALSTrainer)


def prepare_to_score(
    trainer: Trainer,
    item_tensors: dict[str, npt.NDArray[np.float32]] | dict[str, npt.NDArray[np.generic]],
    train: Interactions,
) -> None:
    """Make ``trainer.score`` valid for these item tensors.

    Implicit ALS solves its user factors for them in closed form (cheap, exact); BPR's
    user factors are trained, so there is nothing to do.
    """
    if isinstance(trainer, IALSTrainer):
        trainer.fit_users(item_tensors, train)
