"""Aggregation: the weighted-mean aggregator and the FedAvg server step.

A strategy is two separate settings (see :mod:`coordinator.domain.strategy`): the
*aggregator* folds the round's updates into one delta (the weighted mean here; robust
aggregators such as median or trimmed mean later), and the *server optimizer* applies
that delta to the base model (the FedAvg step here; FedAvgM, FedAdam and FedYogi in
:mod:`coordinator.domain.server_optimizers`).

The aggregator sees one decoded update at a time, so memory is O(model), never
O(participants x model). Callers feed updates in a fixed order (the round's
participants sorted by id); with float64 sums the same updates always give the
same bytes. Under differential privacy (``dp``) each update is clipped before it is
summed and seeded Gaussian noise joins the sums (see :mod:`coordinator.domain.privacy`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt

from coordinator.domain.privacy import DPAggregation, clip_scale
from participant_sdk.wire import TensorSpec, Update

__all__ = [
    "FedAvgAccumulator",
    "accumulate",
    "FedAvgStep",
    "WeightedMean",
    "NORMALIZATIONS",
    "RowNormalization",
    "STRATEGIES",
    "UpdateWeighting",
    "WEIGHTINGS",
]

STRATEGIES = ("fedavg",)

RowNormalization = Literal["touched", "total", "sqrt_touched"]
NORMALIZATIONS: tuple[RowNormalization, ...] = ("touched", "total", "sqrt_touched")
UpdateWeighting = Literal["examples", "uniform"]
WEIGHTINGS: tuple[UpdateWeighting, ...] = ("examples", "uniform")


# elements per block of :func:`accumulate`: its float64 scratch (512 KB) stays in cache
_BLOCK = 1 << 16


def accumulate(
    total: npt.NDArray[np.float64],
    delta: npt.NDArray[np.floating],
    scale: float,
    rows: npt.NDArray[np.int64] | None = None,
) -> None:
    """``total[rows] += delta * scale`` (every row when ``rows`` is None), in float64.

    The same float64 products and sums as ``total += delta.astype(np.float64) * scale``
    (so the same bytes), block by block through one cache-sized scratch buffer instead
    of two model-sized temporaries: a fold streams at close to memory bandwidth.
    ``rows`` must be distinct (the codec checks they strictly ascend), so the
    fancy-indexed ``+=`` of a row-sparse block is exact.
    """
    if rows is None and not total.flags.c_contiguous:  # no flat view to write through
        total += delta.astype(np.float64) * scale
        return
    if rows is None:
        flat_total, flat_delta = total.reshape(-1), delta.reshape(-1)
        scratch = np.empty(min(_BLOCK, flat_delta.size), dtype=np.float64)
        for start in range(0, flat_delta.size, _BLOCK):
            block = flat_total[start : start + _BLOCK]
            buffer = scratch[: block.size]
            np.multiply(flat_delta[start : start + _BLOCK], scale, out=buffer, dtype=np.float64)
            np.add(block, buffer, out=block)
        return
    row_size = max(1, math.prod(delta.shape[1:]))
    step = max(1, _BLOCK // row_size)
    for start in range(0, rows.size, step):
        block_rows = rows[start : start + step]
        total[block_rows] += np.multiply(delta[start : start + step], scale, dtype=np.float64)


class WeightedMean:
    """Weighted mean of dense and row-sparse updates, per row.

    ``mean = sum_i n_i * delta_i / W``. ``n_i`` is the update's ``num_examples``
    (``weighting="examples"``, the default) or 1 for every update (``weighting="uniform"``:
    a local delta already sums its examples' gradients, so example weights count a large
    participant's examples twice). ``row_normalization`` chooses ``W``:

    * ``"touched"`` (default): ``W`` is the weight of the participants that sent the
      row, so each row is the weighted mean over the participants that touched it
      (a row-sparse update only counts towards the rows it sent);
    * ``"total"``: ``W = sum_i n_i`` over every update of the round, for every row,
      so a row moves in proportion to the weight that touched it (a rare item moves
      less than a popular one, as when centralized SGD sums gradients);
    * ``"sqrt_touched"``: ``W`` is the square root of the weight that sent the row, so
      with uniform weights a row moves by its sum over its ``n`` senders divided by
      ``sqrt(n)``. Between the two: deltas that agree across senders (an item's bias,
      pushed the same way by each of its users) add up to a step ``∝ sqrt(n)``, not
      ``∝ n`` as under ``"total"``, while deltas that point in unrelated directions (a
      one-user device's item factors, along its own user vector) keep their ``∝ sqrt(n)``
      sum, not the ``∝ 1 / sqrt(n)`` of the ``"touched"`` mean. Per user on light users
      it levelled off higher than either (validation NDCG@10 ~0.120 against ~0.113,
      central 0.130) but is not a default: a user refresh on the devices did more
      (bench/RESULTS.md, "peruser-step").

    The two agree on rows every update sent (in particular for dense updates). Rows
    nobody sent get a zero delta.

    With ``dp`` (DP-FedAvg; needs ``"uniform"`` and ``"total"``, so ``W`` is the number
    of updates whatever their contents) each update is first scaled by
    ``min(1, C / ||delta_i||)``, and noise of std ``z * C`` is added to every coordinate
    of every tensor's sum, rows nobody sent included, before the division by ``W``
    (or by the policy's fixed ``denominator``: sampled rounds divide by the expected
    cohort, so the noise on the mean has std ``z * C / m``).

    ``clip_norm`` (the strategy's ``update_norm_clip``) scales each update by
    ``min(1, clip_norm / ||delta_i||)`` the same way, without noise: no participant moves
    the model further than that, and no finite update can overflow it.
    """

    def __init__(
        self,
        spec: Mapping[str, TensorSpec],
        *,
        row_normalization: RowNormalization = "touched",
        weighting: UpdateWeighting = "examples",
        dp: DPAggregation | None = None,
        clip_norm: float | None = None,
    ) -> None:
        if row_normalization not in NORMALIZATIONS:
            raise ValueError(f"row_normalization must be one of {NORMALIZATIONS}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}")
        if dp is not None and (row_normalization, weighting) != ("total", "uniform"):
            raise ValueError('dp needs row_normalization="total" and weighting="uniform"')
        self._dp = dp
        self._clip_norm = clip_norm
        self._spec = dict(spec)
        self._normalization: RowNormalization = row_normalization
        self._uniform = weighting == "uniform"
        self._total_weight = 0.0
        self._sums = {name: np.zeros(s.shape, dtype=np.float64) for name, s in spec.items()}
        self._row_weights = {
            name: np.zeros(s.shape[0] if s.shape else 1, dtype=np.float64)
            for name, s in spec.items()
        }
        self.count = 0
        self.total_examples = 0
        # under dp: how many updates had a norm of at most its C (adaptive clipping's
        # count, taken from the norm the clipping computed anyway)
        self.unclipped = 0

    def add(self, update: Update) -> None:
        """Fold one validated update into the running sums."""
        weight = 1.0 if self._uniform else float(update.num_examples)
        # clipping scales the delta, never the update's weight in the denominators
        # the tighter of the two bounds (DP's and the strategy's), applied once, from
        # one computation of the norm
        factor = 1.0
        bounds = [
            c for c in (self._dp.clip_norm if self._dp else None, self._clip_norm) if c is not None
        ]
        if bounds and update.norm_surely_within(min(bounds)):
            # within every bound: factor 1 and unclipped, as the exact norm would say,
            # without its float64 pass (most updates, under the default clip)
            self.unclipped += self._dp is not None
        elif self._dp is not None or self._clip_norm is not None:
            norm = update.norm()
            if self._dp is not None:
                factor = clip_scale(norm, self._dp.clip_norm)
                self.unclipped += norm <= self._dp.clip_norm
            if self._clip_norm is not None:
                factor = min(factor, clip_scale(norm, self._clip_norm))
        scale = weight * factor
        for name, delta in update.tensors.items():
            accumulate(self._sums[name], delta, scale, update.rows)
            if update.rows is None:
                self._row_weights[name] += weight
            else:
                self._row_weights[name][update.rows] += weight
        self.count += 1
        self.total_examples += update.num_examples
        self._total_weight += weight

    def add_sum(self, tensors: Mapping[str, npt.NDArray[np.float64]], count: int) -> None:
        """Fold the sum of ``count`` dense updates seen only as their sum (secure
        aggregation): uniform weights, each update already clipped by its participant, so
        nothing is scaled here; DP noise, if any, still joins the sums in ``mean_deltas``."""
        if not self._uniform or self._normalization != "total":
            raise ValueError('a sum of updates needs weighting="uniform", normalization="total"')
        if set(tensors) != set(self._spec):
            raise ValueError("the sum must hold every tensor of the spec")
        for name, total in tensors.items():
            if total.shape != self._sums[name].shape:
                raise ValueError(f"tensor {name} has shape {total.shape}")
            self._sums[name] += total
            self._row_weights[name] += count
        self.count += count
        self._total_weight += count

    def mean_deltas(self) -> Iterator[tuple[str, npt.NDArray[np.float64]]]:
        """The aggregated delta of each tensor, in spec order, one tensor at a time."""
        # a fresh generator per call: the same noise every time, one tensor at a time
        noise = self._dp.generator() if self._dp and self._dp.noise_std > 0 else None
        for name, spec in self._spec.items():
            if self._dp is not None and self._dp.denominator is not None:
                weights = np.full_like(self._row_weights[name], self._dp.denominator)
            elif self._normalization == "total":
                weights = np.full_like(self._row_weights[name], self._total_weight)
            elif self._normalization == "sqrt_touched":
                weights = np.sqrt(self._row_weights[name])
            else:
                weights = self._row_weights[name]
            denom = np.where(weights > 0, weights, 1.0)
            total = self._sums[name]
            if noise is not None:
                assert self._dp is not None
                total = total + noise.standard_normal(spec.shape) * self._dp.noise_std
            yield name, total / denom.reshape((-1,) + (1,) * (len(spec.shape) - 1))

    def touched(self, name: str) -> npt.NDArray[np.bool_]:
        """Which rows of ``name`` this round moves: those some update sent (with weight),
        or every row under DP (the noise moves them all, and which rows were sent must
        not show). A server optimizer leaves the other rows and their state alone."""
        weights = self._row_weights[name]
        if self._dp is not None:
            return np.ones(weights.shape, dtype=np.bool_)
        return weights > 0


class FedAvgStep:
    """The FedAvg server step: ``new = base + server_lr * delta`` (no server state)."""

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = server_lr

    def step(
        self,
        name: str,  # noqa: ARG002 - stateful optimizers keep per-tensor state
        base: npt.NDArray[np.generic],
        delta: npt.NDArray[np.float64],
        state: Mapping[str, npt.NDArray[np.generic]],  # noqa: ARG002
        touched: npt.NDArray[np.bool_] | None = None,  # noqa: ARG002 - untouched rows: delta 0
    ) -> tuple[npt.NDArray[np.float64], dict[str, npt.NDArray[np.float32]]]:
        # base + server_lr * delta in float64, written over ``delta`` (an aggregator's
        # mean_deltas yields fresh arrays its caller owns): no model-sized array of its
        # own per tensor and round. The same values, bit for bit
        if delta.dtype != np.float64 or not delta.flags.writeable:
            delta = np.array(delta, dtype=np.float64)
        if self.server_lr != 1.0:
            np.multiply(delta, self.server_lr, out=delta)
        np.add(base, delta, out=delta, dtype=np.float64)
        return delta, {}


class FedAvgAccumulator:
    """Weighted FedAvg: a :class:`WeightedMean` followed by a :class:`FedAvgStep`.

    ``new = base + server_lr * sum_i n_i * delta_i / W``; see :class:`WeightedMean` for
    ``weighting``, ``row_normalization`` and ``dp``. ``server_lr`` = 1 is plain FedAvg;
    rows nobody sent keep the base value.
    """

    def __init__(
        self,
        spec: Mapping[str, TensorSpec],
        *,
        server_lr: float = 1.0,
        row_normalization: RowNormalization = "touched",
        weighting: UpdateWeighting = "examples",
        dp: DPAggregation | None = None,
    ) -> None:
        self._mean = WeightedMean(
            spec, row_normalization=row_normalization, weighting=weighting, dp=dp
        )
        self._step = FedAvgStep(server_lr)

    @property
    def count(self) -> int:
        return self._mean.count

    @property
    def total_examples(self) -> int:
        return self._mean.total_examples

    def add(self, update: Update) -> None:
        """Fold one validated update into the running sums."""
        self._mean.add(update)

    def result(
        self, base: Mapping[str, npt.NDArray[np.generic]]
    ) -> dict[str, npt.NDArray[np.float32]]:
        """Return the new model tensors as float32."""
        return {
            name: self._step.step(name, base[name], delta, {})[0].astype(np.float32)
            for name, delta in self._mean.mean_deltas()
        }
