"""Aggregation strategies: streaming, deterministic, float64 accumulation.

An accumulator sees one decoded update at a time, so memory is O(model), never
O(participants x model). Callers feed updates in a fixed order (the round's
participants sorted by id); with float64 sums the same updates always give the
same bytes. Under differential privacy (``dp``) each update is clipped before it is
summed and seeded Gaussian noise joins the sums (see :mod:`coordinator.domain.privacy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt

from coordinator.domain.privacy import DPAggregation
from participant_sdk.wire import TensorSpec, Update

__all__ = [
    "FedAvgAccumulator",
    "NORMALIZATIONS",
    "RowNormalization",
    "STRATEGIES",
    "UpdateWeighting",
    "WEIGHTINGS",
]

STRATEGIES = ("fedavg",)

RowNormalization = Literal["touched", "total"]
NORMALIZATIONS: tuple[RowNormalization, ...] = ("touched", "total")
UpdateWeighting = Literal["examples", "uniform"]
WEIGHTINGS: tuple[UpdateWeighting, ...] = ("examples", "uniform")


class FedAvgAccumulator:
    """Weighted FedAvg over dense and row-sparse updates.

    ``new = base + server_lr * sum_i n_i * delta_i / W``, computed per row. ``n_i`` is
    the update's ``num_examples`` (``weighting="examples"``, the default) or 1 for every
    update (``weighting="uniform"``: a local delta already sums its examples' gradients,
    so example weights count a large participant's examples twice). ``row_normalization``
    chooses ``W``:

    * ``"touched"`` (default): ``W`` is the weight of the participants that sent the
      row, so each row is the weighted mean over the participants that touched it
      (a row-sparse update only counts towards the rows it sent);
    * ``"total"``: ``W = sum_i n_i`` over every update of the round, for every row,
      so a row moves in proportion to the weight that touched it (a rare item moves
      less than a popular one, as when centralized SGD sums gradients).

    The two agree on rows every update sent (in particular for dense updates).
    Rows nobody sent keep the base value. ``server_lr`` = 1 is plain FedAvg.

    With ``dp`` (DP-FedAvg; needs ``"uniform"`` and ``"total"``, so ``W`` is the number
    of updates whatever their contents) each update is first scaled by
    ``min(1, C / ||delta_i||)``, and noise of std ``z * C`` is added to every coordinate
    of every tensor's sum, rows nobody sent included, before the division by ``W``.
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
        if row_normalization not in NORMALIZATIONS:
            raise ValueError(f"row_normalization must be one of {NORMALIZATIONS}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}")
        if dp is not None and (row_normalization, weighting) != ("total", "uniform"):
            raise ValueError('dp needs row_normalization="total" and weighting="uniform"')
        self._dp = dp
        self._spec = dict(spec)
        self._server_lr = server_lr
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

    def add(self, update: Update) -> None:
        """Fold one validated update into the running sums."""
        weight = 1.0 if self._uniform else float(update.num_examples)
        # clipping scales the delta, never the update's weight in the denominators
        scale = weight * self._dp.clip_factor(update) if self._dp else weight
        for name, delta in update.tensors.items():
            scaled = delta.astype(np.float64) * scale
            if update.rows is None:
                self._sums[name] += scaled
                self._row_weights[name] += weight
            else:
                # rows are distinct (validated by the codec), so fancy-index += is exact
                self._sums[name][update.rows] += scaled
                self._row_weights[name][update.rows] += weight
        self.count += 1
        self.total_examples += update.num_examples
        self._total_weight += weight

    def result(
        self, base: Mapping[str, npt.NDArray[np.generic]]
    ) -> dict[str, npt.NDArray[np.float32]]:
        """Return the new model tensors as float32."""
        out: dict[str, npt.NDArray[np.float32]] = {}
        # a fresh generator per call: the same noise every time, one tensor at a time
        noise = self._dp.generator() if self._dp and self._dp.noise_std > 0 else None
        for name, spec in self._spec.items():
            if self._normalization == "total":
                weights = np.full_like(self._row_weights[name], self._total_weight)
            else:
                weights = self._row_weights[name]
            denom = np.where(weights > 0, weights, 1.0)
            total = self._sums[name]
            if noise is not None:
                assert self._dp is not None
                total = total + noise.standard_normal(spec.shape) * self._dp.noise_std
            mean = total / denom.reshape((-1,) + (1,) * (len(spec.shape) - 1))
            new = np.asarray(base[name], dtype=np.float64) + self._server_lr * mean
            out[name] = new.astype(np.float32)
        return out
