"""One local trainer per federation model kind: ``mf`` (BPR), ``ials`` (implicit ALS) and
``ease`` (closed-form EASE: its "training" is one Gram upload, see :mod:`.ease_trainer`).

Both trainers share one public shape (``train_round``, ``score``, ``save``/``load``), so
the participant loop and the simulation hold either. The differences they must know
about are here: which config goes with which kind, which kind uploads dense deltas, and
that implicit ALS solves its user factors for a version before scoring it.
"""

from __future__ import annotations

from typing import Literal, TypeAlias, overload

import numpy as np
import numpy.typing as npt

from .data import Interactions
from .ease_trainer import EASEConfig, EASETrainer
from .ials import IALSConfig, IALSTrainer
from .model import BPRConfig, BPRTrainer

__all__ = [
    "AnyTrainer",
    "AnyTrainerConfig",
    "ModelKind",
    "Trainer",
    "TrainerConfig",
    "config_for",
    "fold_in",
    "make_trainer",
    "prepare_to_score",
    "uploads_dense",
]

ModelKind = Literal["mf", "ials", "ease"]
Trainer: TypeAlias = BPRTrainer | IALSTrainer
TrainerConfig: TypeAlias = BPRConfig | IALSConfig
AnyTrainer: TypeAlias = BPRTrainer | IALSTrainer | EASETrainer
AnyTrainerConfig: TypeAlias = BPRConfig | IALSConfig | EASEConfig


def config_for(kind: str, config: AnyTrainerConfig | None, *, dim: int) -> AnyTrainerConfig:
    """The config of ``kind`` with the federation's ``dim``: ``config`` or the defaults.

    Raises ``ValueError`` when ``config`` belongs to the other kind, rather than train a
    model the federation does not hold.
    """
    if kind == "ease":
        if config is not None and not isinstance(config, EASEConfig):
            raise ValueError("the federation's model kind is 'ease': pass no config")
        return EASEConfig()
    if isinstance(config, EASEConfig):
        raise ValueError(f"the federation's model kind is {kind!r}: EASEConfig does not apply")
    if kind == "ials":
        if isinstance(config, BPRConfig):
            raise ValueError("the federation's model kind is 'ials': pass an IALSConfig")
        return (config or IALSConfig()).replace(dim=dim)
    if kind == "mf":
        if isinstance(config, IALSConfig):
            raise ValueError("the federation's model kind is 'mf' (BPR): pass a BPRConfig")
        return (config or BPRConfig()).replace(dim=dim)
    raise ValueError(f"model kind {kind!r} is not supported by this SDK (mf, ials, ease)")


@overload
def make_trainer(config: TrainerConfig, *, num_users: int, num_items: int) -> Trainer: ...
@overload
def make_trainer(config: EASEConfig, *, num_users: int, num_items: int) -> EASETrainer: ...
@overload
def make_trainer(config: AnyTrainerConfig, *, num_users: int, num_items: int) -> AnyTrainer: ...
def make_trainer(config: AnyTrainerConfig, *, num_users: int, num_items: int) -> AnyTrainer:
    """The trainer that goes with ``config``."""
    if isinstance(config, EASEConfig):
        return EASETrainer(num_users=num_users, num_items=num_items, config=config)
    if isinstance(config, IALSConfig):
        return IALSTrainer(num_users=num_users, num_items=num_items, config=config)
    return BPRTrainer(num_users=num_users, num_items=num_items, config=config)


def uploads_dense(trainer: AnyTrainer) -> bool:
    """Whether every item row changes each round (implicit ALS: the negatives move all)."""
    return isinstance(trainer, IALSTrainer)


def prepare_to_score(
    trainer: AnyTrainer,
    item_tensors: dict[str, npt.NDArray[np.float32]] | dict[str, npt.NDArray[np.generic]],
    train: Interactions,
) -> None:
    """Make ``trainer.score`` valid for these item tensors.

    Implicit ALS solves its user factors for them in closed form (cheap, exact); BPR's
    user factors are trained, so there is nothing to do.
    """
    if isinstance(trainer, IALSTrainer | EASETrainer):
        trainer.fit_users(item_tensors, train)


def fold_in(
    trainer: AnyTrainer,
    item_tensors: dict[str, npt.NDArray[np.float32]] | dict[str, npt.NDArray[np.generic]],
    history: Interactions,
) -> None:
    """Fit the users' private state to their whole local ``history`` for these (frozen)
    item tensors: what a deployed model scores with, and the protocol's final fit on
    train + validation for the part a participant owns.

    Implicit ALS and EASE fit users exactly (a closed-form solve; the rows ``x_u``); BPR
    trains its user factors with the items frozen for as many epochs as a training round
    gives them (``config.epochs`` plus the ``user_epochs`` refresh): a device whose user
    was refreshed every round is not folded in with a third of that work (chosen on the
    validation split one step back, bench/RESULTS.md "peruser-more"). The item tensors
    are not modified.
    """
    if isinstance(trainer, BPRTrainer):
        if len(history):  # a participant without interactions has nothing to fit
            config = trainer.config
            trainer.train_round(
                item_tensors,
                history,
                update_items=False,
                epochs=config.epochs + config.user_epochs,
            )
    else:
        trainer.fit_users(item_tensors, history)
