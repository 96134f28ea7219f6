"""Local training that never hands NaN/Inf (or an exploded update) to the uploader.

:func:`train_with_backoff` runs one round of a trainer's ``train_round`` and checks
what came out with :func:`update_problem`: every trained tensor finite, no item row
moved further than ``max_row_norm``, no SGD step gated for overflow, and the private
user factors finite. If the round diverged, the trainer's private state is restored and
the round is trained again from the same base with the learning rate halved, at most
``max_backoffs`` times; if it still diverges, :class:`TrainingDivergedError` says which
round, which tensor and which learning rates were tried, and the trainer is left as it
was before the round (nothing of the failed attempts is kept).

Why a row norm bound and not only finiteness: an overflowing run passes through huge
but finite values before it reaches Inf, and an upload of 1e30-sized deltas would wreck
the federation just as surely as a NaN.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from .data import Interactions
from .ials import IALSTrainer
from .model import BPRTrainer, LocalUpdate

__all__ = [
    "DEFAULT_MAX_BACKOFFS",
    "DEFAULT_MAX_ROW_NORM",
    "TrainingDivergedError",
    "train_with_backoff",
    "update_problem",
]

log = logging.getLogger("fedrec.participant")

# Halvings tried after the first attempt: the last try runs at 1/8 of the learning rate.
DEFAULT_MAX_BACKOFFS = 3
# Largest L2 norm an item row's delta (or a user factor row) may reach in one round.
# Trained factors have norms of order 1 (scores are dot products); 1e3 is far outside
# anything a converging run produces and far below float32 overflow.
DEFAULT_MAX_ROW_NORM = 1e3


class TrainingDivergedError(ArithmeticError):
    """Local training diverged at every learning rate tried; nothing was uploaded.

    Attributes
    ----------
    round_number:
        The federation round (0 when trained outside a federation).
    tensor:
        The tensor found broken (``"item_factors"``, ``"item_bias"``, ``"user_factors"``).
    problem:
        What was wrong with it, e.g. ``"12 NaN/Inf values"``.
    learning_rates:
        The learning rates tried, in order.
    """

    def __init__(
        self, *, round_number: int, tensor: str, problem: str, learning_rates: list[float]
    ) -> None:
        tried = ", ".join(f"{lr:g}" for lr in learning_rates)
        super().__init__(
            f"round {round_number}: local training diverged: tensor {tensor!r} has {problem} "
            f"(learning rates tried: {tried}); nothing uploaded for this round. "
            "Lower the local learning rate."
        )
        self.round_number = round_number
        self.tensor = tensor
        self.problem = problem
        self.learning_rates = learning_rates


def _row_norms(array: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    # float64: the norm of a large float32 row must not itself overflow to Inf
    rows = np.asarray(array, dtype=np.float64).reshape(array.shape[0], -1)
    norms: npt.NDArray[np.float64] = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    return norms


def _tensor_problem(array: npt.NDArray[np.generic], max_row_norm: float) -> str | None:
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        return f"{bad} NaN/Inf value{'s' if bad != 1 else ''}"
    if array.size:
        largest = float(_row_norms(array).max())
        if largest > max_row_norm:
            return f"a row of L2 norm {largest:.3g} > {max_row_norm:g}"
    return None


def update_problem(
    update: LocalUpdate,
    user_factors: npt.NDArray[np.float32],
    *,
    max_row_norm: float = DEFAULT_MAX_ROW_NORM,
) -> tuple[str, str] | None:
    """``(tensor, problem)`` for the first thing wrong with a round's result, else None.

    Checks the item deltas (their rows' norms bound how far one round may move the
    global model), the user factors (private, but they score every recommendation) and
    whether the trainer had to gate overflowing steps.
    """
    checks: Mapping[str, npt.NDArray[np.generic]] = {
        **update.delta,
        "user_factors": user_factors,
    }
    for name, array in checks.items():
        problem = _tensor_problem(array, max_row_norm)
        if problem is not None:
            return name, problem
    if update.skipped_steps:
        tensors = "item_factors/item_bias/user_factors"
        return tensors, f"{update.skipped_steps} SGD steps that would have overflowed"
    return None


def _step_size(trainer: BPRTrainer | IALSTrainer, round_number: int) -> float:
    """The local step a back-off halves: BPR's learning rate of this round (its
    ``round_decay`` schedule), implicit ALS's item step."""
    if isinstance(trainer, IALSTrainer):
        return trainer.config.item_step
    return trainer.config.round_learning_rate(round_number)


def train_with_backoff(
    trainer: BPRTrainer | IALSTrainer,
    base: Mapping[str, npt.NDArray[np.generic]],
    train: Interactions,
    *,
    round_number: int = 0,
    learning_rate: float | None = None,
    max_backoffs: int = DEFAULT_MAX_BACKOFFS,
    max_row_norm: float = DEFAULT_MAX_ROW_NORM,
) -> tuple[LocalUpdate, float]:
    """Train one round; on divergence retry from ``base`` at half the learning rate.

    Returns the checked update and the learning rate that produced it. Raises
    :class:`TrainingDivergedError` after ``1 + max_backoffs`` diverged attempts, with
    the trainer's private state as it was before the call.
    """
    if max_backoffs < 0:
        raise ValueError(f"max_backoffs must be >= 0, got {max_backoffs}")
    lr = _step_size(trainer, round_number) if learning_rate is None else learning_rate
    before = trainer.state_dict()
    tried: list[float] = []
    found: tuple[str, str] = ("item_factors", "no attempt")
    for attempt in range(1 + max_backoffs):
        tried.append(lr)
        try:
            update = trainer.train_round(dict(base), train, learning_rate=lr)
        except FloatingPointError:  # a trainer that checks its own result (implicit ALS)
            problem: tuple[str, str] | None = ("item_factors", "non-finite values")
        else:
            problem = update_problem(update, trainer.user_factors, max_row_norm=max_row_norm)
        if problem is None:
            return update, lr
        found = problem
        # the failed attempt also moved the private user factors: start again from before
        trainer.load_state_dict(before)
        if attempt < max_backoffs:
            log.warning(
                "round %d: local training at learning rate %g diverged (tensor %r has %s); "
                "retrying from the round's base at %g",
                round_number,
                lr,
                *problem,
                lr / 2,
            )
        lr /= 2
    raise TrainingDivergedError(
        round_number=round_number, tensor=found[0], problem=found[1], learning_rates=tried
    )
