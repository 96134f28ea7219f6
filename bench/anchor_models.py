"""The models of ``bench.anchors``: each one a fit function with its validation grid.

A fit function ``fit(train, setting, seed, checkpoints, on_checkpoint)`` trains one
setting on ``train`` and calls ``on_checkpoint(step, score_fn)`` at each step listed
in ``checkpoints`` (iterations, epochs or rounds; ``(0,)`` for a closed-form model).
A ``False`` return asks it to stop early; library fits that cannot stop mid-way go on.

* ``ease`` — centralized EASE (:mod:`participant_sdk.recsys.ease`), λ on validation;
* ``als`` / ``bpr`` — the ``implicit`` package (``pip install -e '.[bench]'``), run on
  ``threads`` threads with BLAS kept single-threaded, as implicit recommends;
* ``ours`` — our BPR-MF (:class:`participant_sdk.recsys.BPRTrainer`) with the
  configuration ``fedrec simulate`` uses by default, one round = ``local_epochs``
  epochs, rounds chosen on validation with early stopping;
* ``popularity`` — the floor.

Interaction strength (the loaded ``ratings`` column: a rating, play count, quantity)
weighs only ALS training, as ``1 + log1p(strength)`` when validation prefers it over
binary confidence; splits and metrics treat every interaction as one positive.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrec.options import SimulationOptions
from participant_sdk.recsys.data import Interactions
from participant_sdk.recsys.ease import EASEModel
from participant_sdk.recsys.metrics import ScoreFn
from participant_sdk.recsys.model import BPRTrainer, init_item_tensors
from participant_sdk.recsys.popularity import PopularityModel

__all__ = [
    "IMPLICIT_MISSING",
    "Anchor",
    "FitFn",
    "OnCheckpoint",
    "anchors",
    "implicit_available",
]

OnCheckpoint = Callable[[int, ScoreFn], bool]
FitFn = Callable[[Interactions, Mapping[str, Any], int, Sequence[int], OnCheckpoint], None]

IMPLICIT_MISSING = (
    "the 'implicit' package is not installed: the ALS and BPR anchors need it. Install the "
    "bench extra: pip install -e '.[bench]' (or pip install 'implicit>=0.7')"
)


@dataclass(frozen=True)
class Anchor:
    """A model of the anchor table: its validation grid and how to fit it.

    ``checkpoints`` are the steps (iterations, epochs, rounds) validated per setting;
    the chosen step becomes the final fit's length. ``patience`` (checkpoints without
    a better validation NDCG@10) stops a setting early when the fit can stop.
    """

    name: str
    label: str
    grid: tuple[Mapping[str, Any], ...]
    checkpoints: tuple[int, ...]
    fit: FitFn
    deterministic: bool
    patience: int | None = None


def implicit_available() -> bool:
    """Whether the optional ``implicit`` package can be imported."""
    return importlib.util.find_spec("implicit") is not None


# ---------------------------------------------------------------------------- popularity, EASE
def _fit_popularity(
    train: Interactions,
    setting: Mapping[str, Any],  # noqa: ARG001 - the common fit signature
    seed: int,  # noqa: ARG001
    checkpoints: Sequence[int],  # noqa: ARG001
    on_checkpoint: OnCheckpoint,
) -> None:
    on_checkpoint(0, PopularityModel(train).score)


def _fit_ease(
    train: Interactions,
    setting: Mapping[str, Any],
    seed: int,  # noqa: ARG001 - closed form: no randomness
    checkpoints: Sequence[int],  # noqa: ARG001
    on_checkpoint: OnCheckpoint,
) -> None:
    on_checkpoint(0, EASEModel(train, float(setting["lam"])).score)


# ---------------------------------------------------------------------------- implicit
def _user_items(train: Interactions, values: npt.NDArray[np.float64]) -> Any:
    from scipy.sparse import csr_matrix  # scipy comes with implicit

    return csr_matrix(
        (values.astype(np.float32), (train.users, train.items)),
        shape=(train.num_users, train.num_items),
    )


def _strength_values(train: Interactions, weighting: str) -> npt.NDArray[np.float64]:
    if weighting == "binary":
        return np.ones(len(train))
    # log-damped strength: heavy counts help, but do not drown the rest of a user's items
    strength = np.nan_to_num(train.ratings, nan=0.0, posinf=0.0, neginf=0.0)
    return 1.0 + np.log1p(np.maximum(strength, 0.0))


def _factor_scorer(model: Any) -> ScoreFn:
    def score(users: npt.NDArray[np.int64]) -> npt.NDArray[np.floating]:
        out: npt.NDArray[np.floating] = model.user_factors[users] @ model.item_factors.T
        return out

    return score


def _run_implicit(
    model: Any, user_items: Any, checkpoints: Sequence[int], on_checkpoint: OnCheckpoint
) -> None:
    wanted = set(checkpoints)
    scorer = _factor_scorer(model)

    def callback(iteration: int, *_progress: Any) -> None:
        if iteration + 1 in wanted:  # the factors are updated in place during fit
            on_checkpoint(iteration + 1, scorer)

    model.fit(user_items, show_progress=False, callback=callback)


def _fit_als(
    train: Interactions,
    setting: Mapping[str, Any],
    seed: int,
    checkpoints: Sequence[int],
    on_checkpoint: OnCheckpoint,
) -> None:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    values = _strength_values(train, str(setting["weighting"]))
    # implicit's own threads do the work; a threaded BLAS under them only contends
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=int(setting["factors"]),
            regularization=float(setting["reg"]),
            alpha=float(setting["alpha"]),
            iterations=max(checkpoints),
            num_threads=int(setting["threads"]),
            random_state=seed,
        )
        _run_implicit(model, _user_items(train, values), checkpoints, on_checkpoint)


def _fit_bpr(
    train: Interactions,
    setting: Mapping[str, Any],
    seed: int,
    checkpoints: Sequence[int],
    on_checkpoint: OnCheckpoint,
) -> None:
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = BayesianPersonalizedRanking(
            factors=int(setting["factors"]),
            learning_rate=float(setting["lr"]),
            regularization=float(setting["reg"]),
            iterations=max(checkpoints),
            num_threads=int(setting["threads"]),
            random_state=seed,
        )
        values = np.ones(len(train))
        _run_implicit(model, _user_items(train, values), checkpoints, on_checkpoint)


# ---------------------------------------------------------------------------- our BPR-MF
def _fit_ours(
    train: Interactions,
    setting: Mapping[str, Any],  # noqa: ARG001 - the simulation's defaults, not a grid
    seed: int,
    checkpoints: Sequence[int],
    on_checkpoint: OnCheckpoint,
) -> None:
    options = SimulationOptions(seed=seed)
    config = options.bpr_config()
    trainer = BPRTrainer(num_users=train.num_users, num_items=train.num_items, config=config)
    # the federation's initial model (coordinator init_scale 0.01), as simulate's baseline
    tensors = init_item_tensors(train.num_items, config.dim, seed=seed, scale=0.01)
    wanted = set(checkpoints)
    for round_number in range(1, max(checkpoints) + 1):
        update = trainer.train_round(tensors, train)
        tensors = {"item_factors": update.item_factors, "item_bias": update.item_bias}
        if round_number in wanted and not on_checkpoint(
            round_number, _bpr_scorer(trainer, tensors)
        ):
            return


def _bpr_scorer(trainer: BPRTrainer, tensors: dict[str, Any]) -> ScoreFn:
    # scored at once by the caller: the trainer's user factors move on with the next round
    def score(users: npt.NDArray[np.int64]) -> npt.NDArray[np.floating]:
        return trainer.score(users, tensors)

    return score


def anchors(
    *,
    quick: bool = False,
    threads: int = 2,
    has_strength: bool = False,
    ours_max_rounds: int = 60,
) -> dict[str, Anchor]:
    """The anchor models with their validation grids (smaller with ``quick``)."""
    weightings = ("binary", "log") if has_strength else ("binary",)
    lams = (30.0, 300.0, 3000.0) if quick else (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
    als_factors = (64,) if quick else (32, 64, 128)
    als_regs = (0.1,) if quick else (0.01, 0.1, 1.0)
    als_alphas = (1.0, 10.0) if quick else (1.0, 5.0, 20.0)
    bpr_factors = (64,) if quick else (64, 128)
    bpr_lrs = (0.05,) if quick else (0.01, 0.05)
    bpr_regs = (0.01,) if quick else (0.001, 0.01)
    ours_rounds = min(ours_max_rounds, 10) if quick else ours_max_rounds
    return {
        "popularity": Anchor(
            "popularity", "popularity (floor)", ({},), (0,), _fit_popularity, True
        ),
        "ease": Anchor(
            "ease",
            "EASE (ours, numpy)",
            tuple({"lam": lam} for lam in lams),
            (0,),
            _fit_ease,
            True,
        ),
        "als": Anchor(
            "als",
            "implicit ALS",
            tuple(
                {"factors": f, "reg": r, "alpha": a, "weighting": w, "threads": threads}
                for f in als_factors
                for r in als_regs
                for a in als_alphas
                for w in weightings
            ),
            (5, 10) if quick else (5, 10, 15, 30),
            _fit_als,
            False,
        ),
        "bpr": Anchor(
            "bpr",
            "implicit BPR",
            tuple(
                {"factors": f, "lr": lr, "reg": r, "threads": threads}
                for f in bpr_factors
                for lr in bpr_lrs
                for r in bpr_regs
            ),
            (25, 50) if quick else (25, 50, 100, 150),
            _fit_bpr,
            False,
        ),
        "ours": Anchor(
            "ours",
            "our BPR-MF, centralized (simulate defaults)",
            ({},),
            tuple(range(1, ours_rounds + 1)),
            _fit_ours,
            False,
            patience=5,
        ),
    }
