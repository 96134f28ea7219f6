"""The EASE candidate of the recipe search: whether it may run, and its lambda on validation.

Federated EASE equals centralized EASE by construction (the coordinator sums the
participants' Grams exactly and solves with :func:`coordinator.domain.ease_solve.ease_model`,
which the centralized baseline calls too; each participant scores its users with their
own rows ``x_u B``), so the search scores it without a federation: one solve of the
pooled training Gram per candidate λ, each scored on the validation split exactly as the
participants would report it. It needs no rounds, so the search compares its best
validation NDCG@10 with the iterative candidates' at their final rung.

**λ adapts to the data.** EASE's penalty acts against the Gram's diagonal, the item
counts, so a fixed grid that suits one data set's density sits at the edge of another's.
The grid is geometric (ratio √10) around the mean item count of the training split, and
when the best λ is at an edge it is extended one step at a time on that side (at most
:data:`MAX_GRID_EXTENSIONS`): the validated optimum ends inside the grid or at its bound.

**Large catalogs.** Above :data:`DENSE_MAX_ITEMS` items the federation ships ``B``
pruned to :data:`EASE_TOP_K` entries per column (``ease_top_k``; 8 n k bytes instead of
4 n²), the search scores that pruned model, and the federation publishes the search's
best λ alone (one solve and one download instead of three; the participants still
validate it). The search solves each λ by the cheaper of two exact routes: the Cholesky
inverse of ``G + λI`` (~``n³``), or, with fewer training users ``m`` than items, the
user-side identity ``(XᵀX + λI)⁻¹ = (I − Xᵀ(XXᵀ + λI)⁻¹X)/λ`` from one ``m × m``
eigendecomposition (~``2 m n²`` per λ).

**Cost guard** (:func:`ease_cost`). It estimates EASE's CPU seconds on the default path
(the search's λ's, then the coordinator's and the centralized baseline's solves, at the
rates of :mod:`coordinator.domain.ease_solve`), the peak memory of one solve, and the
bytes the participants would download; the search leaves EASE out, with the figures in
the reason, when the CPU exceeds :data:`EASE_CPU_BUDGET_SECONDS`, the peak exceeds half
the memory available now, or the downloads exceed :data:`EASE_SEARCH_MAX_DOWNLOAD_BYTES`
(per-user federations: 943 participants × 11 MB × each version on ML-100K).
``--model ease`` still runs EASE up to the coordinator's 20 000-item limit.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coordinator.domain.ease_solve import (
    MODEL_TENSOR,
    ease_model,
    ease_precision,
    prune_columns,
    solve_cost,
    solve_dtype,
)
from participant_sdk.recsys import Interactions, evaluate_loo
from participant_sdk.recsys.ease import item_gram
from participant_sdk.recsys.ease_trainer import EASEConfig, EASETrainer

__all__ = [
    "DENSE_MAX_ITEMS",
    "EASE_CPU_BUDGET_SECONDS",
    "EASE_SEARCH_MAX_DOWNLOAD_BYTES",
    "EASE_TOP_K",
    "EaseCost",
    "EaseValidation",
    "ease_cost",
    "ease_lambda_grid",
    "ease_skip_reason",
    "ease_top_k_for",
    "federation_lambdas",
    "pooled_ease_model",
    "search_lambdas",
    "validate_ease",
]

# up to this many items B ships dense (ML-100K: 11 MB); above, pruned to EASE_TOP_K
DENSE_MAX_ITEMS = 5_000
# entries kept per column of B above DENSE_MAX_ITEMS (bench/RESULTS.md: the validation
# cost of the pruning on two large shapes)
EASE_TOP_K = 512
EASE_SEARCH_MAX_DOWNLOAD_BYTES = 4 * 2**30
# EASE's estimated CPU on the default path (search + coordinator + centralized baseline)
# beyond which the search leaves it out. The bar's command has 20 minutes on 2 cores
# (2 400 CPU seconds); a chosen EASE replaces the iterative federation, and the
# coordinator's and the baseline's solves run in two processes at once
EASE_CPU_BUDGET_SECONDS = 900.0
# the grid: mean item count × 10^(k/2), k = -1..4 (0.3x to 100x the mean count)
GRID_STEP = math.sqrt(10.0)
GRID_LOW, GRID_SIZE = -1, 6
MAX_GRID_EXTENSIONS = 3
# the λ's the search expects to score: the grid and one extension
SEARCH_SOLVES = GRID_SIZE + 1
# the federation re-validates the search's best λ and its neighbours (not the whole grid):
# each λ is a version every participant downloads; above DENSE_MAX_ITEMS the best alone
FEDERATION_NEIGHBOURS = 1
# flops per CPU second of the user-side route's matrix products (bench/ease_solve.py)
GEMM_FLOPS_PER_CPU_SECOND = 60e9


def ease_top_k_for(num_items: int) -> int | None:
    """The ``ease_top_k`` of a federation over ``num_items`` (None: B ships dense)."""
    return None if num_items <= DENSE_MAX_ITEMS else min(EASE_TOP_K, num_items - 1)


def federation_neighbours(num_items: int) -> int:
    """How many λ's either side of the best the federation re-validates."""
    return FEDERATION_NEIGHBOURS if num_items <= DENSE_MAX_ITEMS else 0


def ease_lambda_grid(train: Interactions) -> tuple[float, ...]:
    """Candidate λ's scaled to the data: geometric around the mean item count."""
    counts = np.bincount(np.asarray(train.items, dtype=np.int64), minlength=train.num_items)
    seen = counts[counts > 0]
    scale = float(seen.mean()) if seen.size else 1.0
    return tuple(_round(scale * GRID_STEP**k) for k in range(GRID_LOW, GRID_LOW + GRID_SIZE))


def _round(value: float) -> float:
    # two significant digits: readable, and distinct at a √10 ratio
    return float(f"{max(value, 1e-3):.2g}")


def available_memory_bytes() -> int | None:
    """Physical memory available now, where the platform says (None elsewhere)."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


@dataclass(frozen=True)
class EaseCost:
    """EASE's estimated cost on the default path (see the module doc)."""

    search_seconds: float
    federation_seconds: float
    peak_bytes: int
    download_bytes: int

    @property
    def cpu_seconds(self) -> float:
        return self.search_seconds + self.federation_seconds

    def report(self) -> dict[str, float]:
        return {
            "estimated_cpu_seconds": round(self.cpu_seconds, 1),
            "estimated_search_seconds": round(self.search_seconds, 1),
            "estimated_peak_gb": round(self.peak_bytes / 2**30, 2),
            "estimated_download_gb": round(self.download_bytes / 2**30, 2),
        }


def ease_cost(num_items: int, num_users: int, participants: int) -> EaseCost:
    """The estimated cost of EASE over ``num_items`` items and ``num_users`` training
    users in a federation of ``participants`` (CPU seconds by the measured rates)."""
    solve = solve_cost(num_items, ease_top_k_for(num_items))
    user_side = 2.0 * num_users * float(num_items) ** 2 / GEMM_FLOPS_PER_CPU_SECOND
    search = SEARCH_SOLVES * min(solve.cpu_seconds, user_side)
    versions = 1 + 2 * federation_neighbours(num_items)
    # the coordinator and the centralized baseline each solve every published λ
    federation = 2 * versions * solve.cpu_seconds
    downloads = participants * (versions + 1) * solve.model_bytes
    return EaseCost(search, federation, solve.peak_bytes, downloads)


def ease_skip_reason(
    num_items: int,
    num_users: int,
    participants: int,
    *,
    available_bytes: int | None,
    cpu_budget: float | None = None,
    max_download_bytes: int | None = None,
) -> str | None:
    """Why the search must leave EASE out for this data and federation, or None.

    The limits default to :data:`EASE_CPU_BUDGET_SECONDS` and
    :data:`EASE_SEARCH_MAX_DOWNLOAD_BYTES`.
    """
    cpu_budget = EASE_CPU_BUDGET_SECONDS if cpu_budget is None else cpu_budget
    if max_download_bytes is None:
        max_download_bytes = EASE_SEARCH_MAX_DOWNLOAD_BYTES
    cost = ease_cost(num_items, num_users, participants)
    if cost.cpu_seconds > cpu_budget:
        return (
            f"EASE over {num_items} items would cost ~{cost.cpu_seconds / 60:.0f} CPU minutes "
            f"(search ~{cost.search_seconds / 60:.1f}, then the coordinator's and the "
            f"centralized baseline's ~n³ solves ~{cost.federation_seconds / 60:.1f}), over "
            f"the {cpu_budget / 60:.0f}-minute budget (--model ease still runs it up to "
            "20 000 items)"
        )
    if available_bytes is not None and cost.peak_bytes > available_bytes / 2:
        return (
            f"EASE's solve would peak at ~{_gb(cost.peak_bytes)}, more than half of the "
            f"{_gb(available_bytes)} of memory available"
        )
    if cost.download_bytes > max_download_bytes:
        return (
            f"the {participants} participants would download B ~{_gb(cost.download_bytes)} "
            f"in all (limit {_gb(max_download_bytes)})"
        )
    return None


def _gb(size: float) -> str:
    return f"{size / 2**30:.2f} GB" if size >= 2**30 else f"{size / 2**20:.0f} MB"


def search_lambdas(
    score: Callable[[float], float],
    grid: Sequence[float],
    *,
    max_extensions: int = MAX_GRID_EXTENSIONS,
) -> dict[float, float]:
    """``score(λ)`` for every λ of ``grid``, then one more step beyond whichever edge is
    best, while it is (at most ``max_extensions`` steps in all). Returns every score,
    by increasing λ. Ties go to the smaller λ."""
    scores = {lam: score(lam) for lam in grid}
    for _ in range(max_extensions):  # bounded
        ordered = sorted(scores)
        best = max(ordered, key=lambda lam: scores[lam])
        if len(ordered) < 2:
            break
        if best == ordered[0]:
            step = ordered[0] / ordered[1]
        elif best == ordered[-1]:
            step = ordered[-1] / ordered[-2]
        else:
            break
        nxt = _round(best * step)
        if nxt in scores or not 0 < nxt <= 1e9:
            break
        scores[nxt] = score(nxt)
    return dict(sorted(scores.items()))


def federation_lambdas(
    scores: dict[float, float], neighbours: int = FEDERATION_NEIGHBOURS
) -> tuple[float, ...]:
    """The best λ and its ``neighbours`` either side in the searched grid, ascending."""
    ordered = sorted(scores)
    best = ordered.index(max(ordered, key=lambda lam: scores[lam]))
    low = max(0, best - neighbours)
    return tuple(ordered[low : best + neighbours + 1])


@dataclass
class EaseValidation:
    """The EASE candidate's validation NDCG@10 per λ (empty when skipped)."""

    scores: dict[float, float]
    skipped: str | None = None
    seconds: float = 0.0
    neighbours: int = FEDERATION_NEIGHBOURS
    top_k: int | None = None
    route: str = ""
    cost: dict[str, float] | None = None

    @property
    def best(self) -> float:
        return max(self.scores.values()) if self.scores else float("-inf")

    @property
    def best_lambda(self) -> float | None:
        return max(self.scores, key=lambda lam: self.scores[lam]) if self.scores else None

    @property
    def lambdas(self) -> tuple[float, ...]:
        """What the federation publishes, one version each."""
        return federation_lambdas(self.scores, self.neighbours)

    def report(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"skipped": self.skipped, **(self.cost or {})}
        return {
            "validation_ndcg@10_by_lambda": {
                f"{lam:g}": round(value, 5) for lam, value in self.scores.items()
            },
            "best_lambda": self.best_lambda,
            "federation_lambdas": list(self.lambdas),
            "top_k": self.top_k,
            "solve": self.route,
            "seconds": round(self.seconds, 1),
            **(self.cost or {}),
        }


def validate_ease(
    train: Interactions,
    valid: Interactions,
    *,
    participants: int = 1,
    progress: Callable[[float, float, float], None] | None = None,
) -> EaseValidation:
    """Solve EASE on ``train`` for each λ of the data's grid; score each on ``valid``.

    The pooled Gram is the exact sum of the participants' Grams (integer counts), a
    user's scores are their own training rows times ``B`` (pruned as the federation
    would ship it), so this is what the federation would validate. ``train`` and
    ``valid`` are all it reads. ``progress(λ, validation NDCG@10, seconds so far)`` is
    called after each λ (on a large catalogue each takes minutes).
    """
    started = time.perf_counter()
    top_k = ease_top_k_for(train.num_items)
    solver = PooledEase(train)
    scorer = EASETrainer(num_users=train.num_users, num_items=train.num_items, config=EASEConfig())
    scorer.fit_users({}, train)

    def score(lam: float) -> float:
        tensors = solver.model(lam, top_k)
        value = float(evaluate_loo(lambda u: scorer.score(u, tensors), train, valid)["ndcg@10"])
        if progress is not None:
            progress(lam, value, time.perf_counter() - started)
        return value

    found = search_lambdas(score, ease_lambda_grid(train))
    cost = ease_cost(train.num_items, solver.num_users, participants)
    return EaseValidation(
        found,
        seconds=time.perf_counter() - started,
        neighbours=federation_neighbours(train.num_items),
        top_k=top_k,
        route=solver.route,
        cost=cost.report(),
    )


class PooledEase:
    """``B(λ)`` of the pooled training data for many λ's, by the cheaper exact route.

    With fewer training users ``m`` than items ``n``, one eigendecomposition of the
    ``m × m`` user Gram ``K = XXᵀ = U diag(t) Uᵀ`` gives every
    ``P(λ) = (I − Zᵀ diag(1/(t+λ)) Z)/λ`` with ``Z = UᵀX`` (~``2 m n²`` flops per λ);
    otherwise each λ is :func:`ease_model`'s Cholesky inverse (~``n³``). Both are exact
    up to rounding; the coordinator always takes the Cholesky route, and the centralized
    baseline calls :func:`pooled_ease_model`, which does too.
    """

    def __init__(self, train: Interactions) -> None:
        n = train.num_items
        users, rows = np.unique(np.asarray(train.users, dtype=np.int64), return_inverse=True)
        self.num_users = int(users.size)
        self.gram: npt.NDArray[np.float32] | None = None
        self.route = "cholesky"
        self._factors: tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]] | None = None
        if 2.0 * self.num_users * n * n / GEMM_FLOPS_PER_CPU_SECOND < solve_cost(n).cpu_seconds:
            self.route = "user-side"
            dtype = solve_dtype(n)
            x = np.zeros((self.num_users, n), dtype=dtype)
            x[rows, np.asarray(train.items, dtype=np.int64)] = 1.0
            eigenvalues, vectors = np.linalg.eigh(x @ x.T)
            self._factors = (np.maximum(eigenvalues, 0.0), vectors.T.astype(dtype) @ x)
        else:
            self.gram = item_gram(train.users, train.items, n, dtype=np.float32)

    def model(self, lam: float, top_k: int | None) -> dict[str, npt.NDArray[np.float32]]:
        """The model tensors of ``λ``, dense or pruned to ``top_k`` per column."""
        return model_tensors(self.precision(lam), top_k)

    def precision(self, lam: float) -> npt.NDArray[np.floating]:
        """``P = (G + λI)⁻¹`` (one ``n²`` array)."""
        if self._factors is None:
            assert self.gram is not None
            return ease_precision(self.gram, lam)
        eigenvalues, z = self._factors
        w = z * (1.0 / np.sqrt(eigenvalues + lam)).astype(z.dtype)[:, None]
        precision: npt.NDArray[np.floating] = w.T @ w  # Xᵀ(K + λI)⁻¹X, symmetric
        del w
        precision *= -1.0 / lam
        precision[np.diag_indices_from(precision)] += 1.0 / lam
        return precision


def model_tensors(
    precision: npt.NDArray[np.floating], top_k: int | None
) -> dict[str, npt.NDArray[np.float32]]:
    """B's tensors from ``P``: pruned (``P`` kept), or dense (``P`` consumed in place)."""
    if top_k is not None:
        return prune_columns(precision, top_k)
    precision /= -np.diag(precision).copy()[None, :]
    precision[np.diag_indices_from(precision)] = 0.0
    return {MODEL_TENSOR: precision.astype(np.float32, copy=False)}


def pooled_ease_model(
    train: Interactions, lam: float, top_k: int | None
) -> dict[str, npt.NDArray[np.float32]]:
    """EASE's model tensors from the pooled training Gram, exactly as the coordinator
    solves them from the participants' summed Grams (same function, same bytes)."""
    gram = item_gram(train.users, train.items, train.num_items, dtype=np.float32)
    return ease_model(gram, lam, top_k=top_k)
