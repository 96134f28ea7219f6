"""Aggregation strategies: streaming, deterministic, float64 accumulation.

An accumulator sees one decoded update at a time, so memory is O(model), never
O(participants x model). Callers feed updates in a fixed order (the round's
participants sorted by id); with float64 sums the same updates always give the
same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt

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
    """

    def __init__(
        self,
        spec: Mapping[str, TensorSpec],
        *,
        server_lr: float = 1.0,
        row_normalization: RowNormalization = "touched",
        weighting: UpdateWeighting = "examples",
    ) -> None:
        if row_normalization not in NORMALIZATIONS:
            raise ValueError(f"row_normalization must be one of {NORMALIZATIONS}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}")
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
        for name, delta in update.tensors.items():
            scaled = delta.astype(np.float64) * weight
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
        for name, spec in self._spec.items():
            if self._normalization == "total":
                weights = np.full_like(self._row_weights[name], self._total_weight)
            else:
                weights = self._row_weights[name]
            denom = np.where(weights > 0, weights, 1.0)
            mean = self._sums[name] / denom.reshape((-1,) + (1,) * (len(spec.shape) - 1))
            new = np.asarray(base[name], dtype=np.float64) + self._server_lr * mean
            out[name] = new.astype(np.float32)
        return out
