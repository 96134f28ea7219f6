"""The popularity baseline: score every item by its training interaction count.

It is the floor of ``EVALUATION.md``: a model that does not clearly beat it is not
learning personalisation.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .data import Interactions

__all__ = ["PopularityModel"]


class PopularityModel:
    """Non-personalised model: ``score(u, i) = #interactions of i`` in the training data.

    Parameters
    ----------
    train:
        Training interactions; only their item counts are used.
    """

    def __init__(self, train: Interactions) -> None:
        self.counts = np.bincount(train.items, minlength=train.num_items).astype(np.float64)

    def score(self, users: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Return the ``(len(users), num_items)`` score matrix (one row per user)."""
        return np.broadcast_to(self.counts, (np.asarray(users).size, self.counts.size)).copy()
