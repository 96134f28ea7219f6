"""Robust aggregators: coordinate-wise median, trimmed mean and Multi-Krum.

They implement the :class:`~coordinator.domain.strategy.Aggregator` protocol, so any
server optimizer follows them. Every update is first clipped to the strategy's
``update_norm_clip`` (``min(1, C / ||delta_i||)``, as the mean does), then:

* ``median`` / ``trimmed_mean`` — per item row, over **the updates that sent that row**
  (a row-sparse update has no opinion on rows it did not send), each coordinate is the
  median, or the mean after dropping the ``floor(trim_fraction * c)`` lowest and highest
  values of the row's ``c`` contributors. Every contributor has one vote: ``num_examples``
  is self-declared, so weighting by it would hand the vote to whoever claims the most.
  A row with fewer than ``min_contributors`` contributors falls back to the clipped
  weighted mean (``normalization`` and ``weighting`` as for ``mean``): too few values
  for an order statistic to mean anything.
* ``multi_krum`` (Blanchard et al. 2017, El Mhamdi et al. 2018) — with ``n`` updates and
  ``f = floor(krum_byzantine_fraction * n)``, each update's score is the sum of its
  squared distances to its ``max(1, n - f - 2)`` nearest others (a row-sparse update is
  zero on the rows it did not send); the ``n - f`` lowest scores (ties: aggregation
  order) are averaged by the clipped weighted mean, and only they touch rows.

Memory: unlike the mean (O(model), flat in the number of updates ``K``), these hold the
round's ``K`` decoded updates (float32, as received: ``K x`` update size; row-sparse
updates hold only their rows), plus a working block of ``K x ROW_BLOCK`` rows in float64
for the order statistics, and ``K x K`` distances for Multi-Krum. Everything is
computed in a fixed order from the same updates, so the bytes are identical on every
replica and on a takeover; nothing is random.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from coordinator.domain.aggregation import RowNormalization, UpdateWeighting, WeightedMean
from coordinator.domain.privacy import clip_factor
from participant_sdk.wire import TensorSpec, Update

__all__ = ["CoordinateWise", "MultiKrum", "ROW_BLOCK"]

F64 = npt.NDArray[np.float64]
# rows per working block of the order statistics: K x ROW_BLOCK x row width floats
ROW_BLOCK = 1024


@dataclass(frozen=True)
class _Held:
    """One update as received, with the factor that clips it."""

    update: Update
    factor: float


def _hold(update: Update, clip_norm: float | None) -> _Held:
    return _Held(update, 1.0 if clip_norm is None else clip_factor(update, clip_norm))


class CoordinateWise:
    """Coordinate-wise median or trimmed mean per item row over the row's contributors,
    with the clipped weighted mean for rows with fewer than ``min_contributors``."""

    def __init__(
        self,
        spec: Mapping[str, TensorSpec],
        *,
        statistic: str,
        trim_fraction: float = 0.0,
        min_contributors: int = 1,
        clip_norm: float | None = None,
        row_normalization: RowNormalization = "touched",
        weighting: UpdateWeighting = "examples",
    ) -> None:
        if statistic not in ("median", "trimmed_mean"):
            raise ValueError("statistic must be 'median' or 'trimmed_mean'")
        if not 0 <= trim_fraction < 0.5:
            raise ValueError("trim_fraction must be in [0, 0.5)")
        if min_contributors < 1:
            raise ValueError("min_contributors must be at least 1")
        self._spec = dict(spec)
        self._statistic = statistic
        self._trim = trim_fraction
        self._min = min_contributors
        self._clip = clip_norm
        # the fallback, and which rows were sent: fed every update as it comes
        self._mean = WeightedMean(
            spec, row_normalization=row_normalization, weighting=weighting, clip_norm=clip_norm
        )
        self._held: list[_Held] = []
        self.count = 0

    def add(self, update: Update) -> None:
        self._mean.add(update)
        self._held.append(_hold(update, self._clip))
        self.count += 1

    def mean_deltas(self) -> Iterator[tuple[str, F64]]:
        for name, fallback in self._mean.mean_deltas():
            yield name, self._robust(name, fallback)

    def touched(self, name: str) -> npt.NDArray[np.bool_]:
        return self._mean.touched(name)

    def contributors(self, name: str) -> npt.NDArray[np.int64]:
        """Per row of ``name``: how many updates sent it."""
        rows = self._spec[name].shape[0] if self._spec[name].shape else 1
        counts = np.zeros(rows, dtype=np.int64)
        for held in self._held:
            if held.update.rows is None:
                counts += 1
            else:
                counts[held.update.rows] += 1
        return counts

    def _robust(self, name: str, fallback: F64) -> F64:
        shape = self._spec[name].shape or (1,)  # a scalar tensor is one "row"
        out = fallback.reshape(shape).copy()
        # float32 views of the updates: only the block is ever float64
        tensors = [held.update.tensors[name].reshape((-1, *shape[1:])) for held in self._held]
        factors = np.array([held.factor for held in self._held]).reshape((-1,) + (1,) * len(shape))
        for start in range(0, shape[0], ROW_BLOCK):
            stop = min(start + ROW_BLOCK, shape[0])
            # contributors' values for rows [start, stop), NaN where an update is silent
            block = np.full((len(self._held), stop - start, *shape[1:]), np.nan)
            for k, held in enumerate(self._held):
                rows = held.update.rows
                if rows is None:
                    block[k] = tensors[k][start:stop]
                    continue
                lo, hi = np.searchsorted(rows, [start, stop])
                block[k, rows[lo:hi] - start] = tensors[k][lo:hi]
            block *= factors  # clipped (NaN stays NaN)
            present = ~np.isnan(block.reshape(len(self._held), stop - start, -1)[:, :, 0])
            count = present.sum(axis=0)
            robust_rows = count >= self._min
            if not robust_rows.any():
                continue
            values = block[:, robust_rows]
            if self._statistic == "median":
                stat = np.nanmedian(values, axis=0)
            else:
                stat = _trimmed_mean(values, count[robust_rows], self._trim)
            out[start:stop][robust_rows] = stat
        return out.reshape(fallback.shape)


def _trimmed_mean(values: F64, count: npt.NDArray[np.int64], trim: float) -> F64:
    """Per row (axis 1) of ``values`` (K x rows x ...; NaN = no contribution): drop the
    ``floor(trim * c)`` lowest and highest of the row's ``c`` values, average the rest."""
    ordered = np.sort(values, axis=0)  # NaN sorts last: the c contributions come first
    cut = np.floor(trim * count).astype(np.int64)
    position = np.arange(values.shape[0]).reshape((-1, 1) + (1,) * (values.ndim - 2))
    extra = (1,) * (values.ndim - 2)
    keep = (position >= cut.reshape((1, -1, *extra))) & (
        position < (count - cut).reshape((1, -1, *extra))
    )
    kept: F64 = np.where(keep, ordered, 0.0).sum(axis=0)
    return np.asarray(kept / (count - 2 * cut).reshape((-1, *extra)), dtype=np.float64)


class MultiKrum:
    """Multi-Krum: average the ``n - f`` updates closest to their neighbours."""

    def __init__(
        self,
        spec: Mapping[str, TensorSpec],
        *,
        byzantine_fraction: float,
        clip_norm: float | None = None,
        row_normalization: RowNormalization = "touched",
        weighting: UpdateWeighting = "examples",
    ) -> None:
        if not 0 <= byzantine_fraction < 0.5:
            raise ValueError("byzantine_fraction must be in [0, 0.5)")
        self._spec = dict(spec)
        self._fraction = byzantine_fraction
        self._clip = clip_norm
        self._normalization: RowNormalization = row_normalization
        self._weighting: UpdateWeighting = weighting
        self._held: list[_Held] = []
        self._mean: WeightedMean | None = None
        self.count = 0

    def add(self, update: Update) -> None:
        self._held.append(_hold(update, self._clip))
        self._mean = None
        self.count += 1

    def selected(self) -> list[int]:
        """Indices (in aggregation order) of the updates Multi-Krum keeps."""
        n = len(self._held)
        if n <= 2:
            return list(range(n))
        f = math.floor(self._fraction * n)
        neighbours = max(1, n - f - 2)
        distances = self._distances()
        np.fill_diagonal(distances, np.inf)
        scores = np.sort(distances, axis=1)[:, :neighbours].sum(axis=1)
        keep = np.argsort(scores, kind="stable")[: n - f]
        return sorted(int(i) for i in keep)

    def mean_deltas(self) -> Iterator[tuple[str, F64]]:
        yield from self._selected_mean().mean_deltas()

    def touched(self, name: str) -> npt.NDArray[np.bool_]:
        return self._selected_mean().touched(name)

    def _selected_mean(self) -> WeightedMean:
        if self._mean is None:
            mean = WeightedMean(
                self._spec,
                row_normalization=self._normalization,
                weighting=self._weighting,
                clip_norm=self._clip,
            )
            for i in self.selected():
                mean.add(self._held[i].update)
            self._mean = mean
        return self._mean

    def _distances(self) -> F64:
        """Squared L2 distances between the clipped updates (zero on unsent rows)."""
        n = len(self._held)
        gram = np.zeros((n, n))
        for name in self._spec:
            # float32 views; each pair's product is summed in float64
            flat = [
                held.update.tensors[name].reshape(len(_rows(held, name, self._spec)), -1)
                for held in self._held
            ]
            for i in range(n):
                for j in range(i, n):
                    x, y = _overlap(self._held[i], self._held[j], flat[i], flat[j])
                    dot = float(np.multiply(x, y, dtype=np.float64).sum())
                    gram[i, j] += dot * self._held[i].factor * self._held[j].factor
                    gram[j, i] = gram[i, j]
        squared = np.diag(gram)
        return np.maximum(squared[:, None] + squared[None, :] - 2 * gram, 0.0)


def _overlap(
    first: _Held, second: _Held, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The rows of ``x`` and ``y`` (two updates' values of one tensor) that both sent."""
    a, b = first.update.rows, second.update.rows
    if a is None and b is None:
        return x, y
    if a is None:
        return x[b], y
    if b is None:
        return x, y[a]
    _, at, bt = np.intersect1d(a, b, assume_unique=True, return_indices=True)
    return x[at], y[bt]


def _rows(held: _Held, name: str, spec: Mapping[str, TensorSpec]) -> npt.NDArray[np.int64]:
    if held.update.rows is not None:
        return held.update.rows
    shape = spec[name].shape
    return np.arange(shape[0] if shape else 1, dtype=np.int64)
