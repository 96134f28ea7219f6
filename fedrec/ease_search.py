"""The EASE candidate of the recipe search: whether it may run, and its lambda on validation.

Federated EASE equals centralized EASE by construction (the coordinator sums the
participants' Grams exactly, and each participant scores its users with their own rows
``x_u B``), so the search scores it without a federation: one solve of the pooled
training Gram per candidate λ, each scored on the validation split exactly as the
participants would report it. It needs no rounds, so the search compares its best
validation NDCG@10 with the iterative candidates' at their final rung.

**λ adapts to the data.** EASE's penalty acts against the Gram's diagonal, the item
counts, so a fixed grid that suits one data set's density sits at the edge of another's.
The grid is geometric (ratio √10) around the mean item count of the training split, and
when the best λ is at an edge it is extended one step at a time on that side (at most
:data:`MAX_GRID_EXTENSIONS`): the validated optimum ends inside the grid or at its bound.

**Cost guard.** EASE's model is a dense ``n × n`` matrix. The solve is one float64
inverse per λ: ~``SOLVE_PEAK_ELEMENTS`` ``n²`` float64 at its peak and ~``n³`` flops
(measured on the 2-core machine under load: 0.2 s at 1 682 items, 0.8 s at 3 000, 3.4 s
at 5 000, so ~27 s at 10 000 and ~4 min at 20 000), and it runs three times on the
default path (this search, the coordinator, the centralized baseline). Every participant
also downloads ``B`` (``4 n²`` bytes) once per version. So the search leaves EASE out,
and says why, when the catalog exceeds :data:`EASE_SEARCH_MAX_ITEMS` (5 000: ~1 GB peak,
seconds per λ), when the solve's peak would not fit in half the memory available now, or
when the federation's downloads of ``B`` would exceed
:data:`EASE_SEARCH_MAX_DOWNLOAD_BYTES` (per-user federations: 943 participants × 11 MB ×
each version on ML-100K). ``--model ease`` still runs EASE up to the coordinator's
20 000-item limit when the user asks for it.
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

from participant_sdk.recsys import Interactions, evaluate_loo
from participant_sdk.recsys.ease import ease_weights, item_gram

__all__ = [
    "EASE_SEARCH_MAX_DOWNLOAD_BYTES",
    "EASE_SEARCH_MAX_ITEMS",
    "EaseValidation",
    "ease_lambda_grid",
    "ease_skip_reason",
    "federation_lambdas",
    "search_lambdas",
    "validate_ease",
]

EASE_SEARCH_MAX_ITEMS = 5_000
EASE_SEARCH_MAX_DOWNLOAD_BYTES = 4 * 2**30
# float64 n² elements alive at the solve's peak: the Gram, ~2.4 for the inverse (see
# participant_sdk.recsys.ease), B
SOLVE_PEAK_ELEMENTS = 4.5
# the grid: mean item count × 10^(k/2), k = -1..4 (0.3x to 100x the mean count)
GRID_STEP = math.sqrt(10.0)
GRID_LOW, GRID_SIZE = -1, 6
MAX_GRID_EXTENSIONS = 3
# the federation re-validates the search's best λ and its neighbours (not the whole grid):
# each λ is a version every participant downloads
FEDERATION_NEIGHBOURS = 1


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


def ease_skip_reason(
    num_items: int,
    participants: int,
    versions: int,
    *,
    available_bytes: int | None,
    max_items: int | None = None,
    max_download_bytes: int | None = None,
) -> str | None:
    """Why the search must leave EASE out for this data and federation, or None.

    ``versions``: the λ's the federation would publish; the limits default to the
    module's :data:`EASE_SEARCH_MAX_ITEMS` and :data:`EASE_SEARCH_MAX_DOWNLOAD_BYTES`.
    """
    max_items = EASE_SEARCH_MAX_ITEMS if max_items is None else max_items
    if max_download_bytes is None:
        max_download_bytes = EASE_SEARCH_MAX_DOWNLOAD_BYTES
    model_bytes = 4 * num_items**2
    if num_items > max_items:
        return (
            f"{num_items} items > {max_items}: EASE's dense {num_items}² solve (one per "
            f"lambda, ~{_gb(SOLVE_PEAK_ELEMENTS * 8 * num_items**2)} at its peak and "
            "minutes on 2 cores) is too costly for the search (--model ease still runs it "
            "up to 20 000 items)"
        )
    peak = SOLVE_PEAK_ELEMENTS * 8 * num_items**2
    if available_bytes is not None and peak > available_bytes / 2:
        return (
            f"EASE's solve would peak at ~{_gb(peak)}, more than half of the "
            f"{_gb(available_bytes)} of memory available"
        )
    downloads = participants * (versions + 1) * model_bytes
    if downloads > max_download_bytes:
        return (
            f"each of {participants} participants would download B ({_gb(model_bytes)}) for "
            f"each of {versions} versions, ~{_gb(downloads)} in all (limit "
            f"{_gb(max_download_bytes)})"
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


def federation_lambdas(scores: dict[float, float]) -> tuple[float, ...]:
    """The best λ and its neighbours in the searched grid, by increasing λ."""
    ordered = sorted(scores)
    best = ordered.index(max(ordered, key=lambda lam: scores[lam]))
    low = max(0, best - FEDERATION_NEIGHBOURS)
    return tuple(ordered[low : best + FEDERATION_NEIGHBOURS + 1])


@dataclass
class EaseValidation:
    """The EASE candidate's validation NDCG@10 per λ (empty when skipped)."""

    scores: dict[float, float]
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def best(self) -> float:
        return max(self.scores.values()) if self.scores else float("-inf")

    @property
    def best_lambda(self) -> float | None:
        return max(self.scores, key=lambda lam: self.scores[lam]) if self.scores else None

    def report(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"skipped": self.skipped}
        return {
            "validation_ndcg@10_by_lambda": {
                f"{lam:g}": round(value, 5) for lam, value in self.scores.items()
            },
            "best_lambda": self.best_lambda,
            "federation_lambdas": list(federation_lambdas(self.scores)),
            "seconds": round(self.seconds, 1),
        }


def validate_ease(train: Interactions, valid: Interactions) -> EaseValidation:
    """Solve EASE on ``train`` for each λ of the data's grid; score each on ``valid``.

    The pooled Gram is the exact sum of the participants' Grams (integer counts), and a
    user's scores are their own training rows times ``B``, so this is what the federation
    would validate. ``train`` and ``valid`` are all it reads.
    """
    started = time.perf_counter()
    gram = item_gram(train.users, train.items, train.num_items)

    def score(lam: float) -> float:
        weights = ease_weights(gram, lam)
        return float(evaluate_loo(lambda u: _rows(train, u) @ weights, train, valid)["ndcg@10"])

    found = search_lambdas(score, ease_lambda_grid(train))
    return EaseValidation(found, seconds=time.perf_counter() - started)


def _rows(train: Interactions, users: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The binary training rows ``x_u`` of ``users`` (a duplicate pair counts once)."""
    pos = np.full(train.num_users, -1, dtype=np.int64)
    pos[users] = np.arange(users.size)
    rows = pos[train.users]
    keep = rows >= 0
    x = np.zeros((users.size, train.num_items), dtype=np.float64)
    x[rows[keep], train.items[keep]] = 1.0
    return x
