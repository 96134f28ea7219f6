"""The participant's side of federated EASE: upload the local Gram once, score ``x_u B``.

EASE's only data statistic is the item Gram ``XᵀX``, a sum over users, so a participant
uploads its own (its non-zero entries, i.e. its co-occurring item pairs, as flat indices
and counts; integer counts, exact in float32 up to 2^24) in the federation's first
round, whose base is version 0.
The coordinator sums the Grams and publishes ``B(λ)`` for one candidate λ per round;
in the later rounds the participant only reports the base on validation and uploads an
update without rows, its "ready" signal. The participant's scores are its users' own
rows times ``B``: nothing about its users leaves the process beyond the Gram.

Memory: the local Gram is ``num_items²`` float32 (1.6 GB at 20 000 items) while it is
built; scoring multiplies the requested users' rows by a dense ``B``, or sums the rows of
a pruned one (:class:`~.ease.PrunedB`: ``O(n k)``, never ``n²``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file as _st_load_file
from safetensors.numpy import save_file as _st_save_file

from .data import Interactions
from .ease import PrunedB, item_gram

__all__ = ["EASEConfig", "EASETrainer"]

F32 = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
GRAM_TENSOR = "ease_gram"
MODEL_TENSOR = "ease_b"
# above this many Gram entries (64 MB of float32) the upload is counted pair by pair
DENSE_GRAM_ENTRIES = 1 << 24
# a pruned B (federation spec ease_top_k): per target item, its k sources and weights
INDEX_TENSOR = "ease_b_index"
VALUE_TENSOR = "ease_b_value"


@dataclass(frozen=True)
class EASEConfig:
    """EASE has no local hyperparameter: λ is the federation's (``ease_lambdas``)."""

    def replace(self, **changes: Any) -> EASEConfig:
        return replace(self, **changes)


def local_gram_entries(train: Interactions, num_items: int) -> tuple[IntArray, F32]:
    """The non-zero entries of the local Gram ``XᵀX``: ascending flat indices
    ``i * num_items + j`` and their counts (float32: exact integers below 2^24)."""
    if num_items * num_items <= DENSE_GRAM_ENTRIES:
        gram = item_gram(train.users, train.items, num_items, dtype=np.float32).reshape(-1)
        keys = np.flatnonzero(gram).astype(np.int64)
        return keys, np.ascontiguousarray(gram[keys])
    # a large catalog: count the co-occurring pairs without the dense n² matrix
    pairs = np.unique(np.stack([train.users, train.items], axis=1).astype(np.int64), axis=0)
    starts = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])
    sizes = np.diff(np.r_[starts, pairs.shape[0]])
    found: list[IntArray] = []
    for user in range(starts.size):  # bounded: one pass per local user
        items = pairs[starts[user] : starts[user] + sizes[user], 1]
        found.append((items[:, None] * num_items + items[None, :]).reshape(-1))
    keys, counts = np.unique(np.concatenate(found), return_counts=True)
    return keys.astype(np.int64), counts.astype(np.float32)


class EASETrainer:
    """A participant's EASE: its Gram upload, and scores ``x_u B`` of its users."""

    def __init__(self, *, num_users: int, num_items: int, config: EASEConfig) -> None:
        self.num_users = num_users
        self.num_items = num_items
        self.config = config
        self._train: Interactions | None = None
        self._pruned: tuple[npt.NDArray[np.generic], PrunedB] | None = None

    def gram_update(
        self, train: Interactions, *, base_version: int
    ) -> tuple[dict[str, F32], IntArray]:
        """The update of a round from ``base_version``: the local Gram's non-zero entries
        (flat indices ``i * n + j`` as ``rows``, their counts) in the first round (base
        0), no entries afterwards (the Gram is already in)."""
        if base_version > 0 or not len(train):
            empty = np.zeros(0, dtype=np.float32)
            return {GRAM_TENSOR: empty}, np.zeros(0, dtype=np.int64)
        keys, counts = local_gram_entries(train, self.num_items)
        return {GRAM_TENSOR: counts}, keys

    def fit_users(
        self,
        item_tensors: dict[str, F32] | dict[str, npt.NDArray[np.generic]],  # noqa: ARG002
        train: Interactions,
    ) -> None:
        """Remember the users' rows ``x_u`` (EASE has no user parameters to solve)."""
        self._train = train

    def score(
        self, users: IntArray, item_tensors: dict[str, F32] | dict[str, npt.NDArray[np.generic]]
    ) -> F32:
        """The ``(len(users), num_items)`` scores ``x_u B`` from the users' training rows."""
        if self._train is None:
            raise ValueError("call fit_users first: EASE scores from the users' own rows")
        users = np.asarray(users, dtype=np.int64)
        pos = np.full(self.num_users, -1, dtype=np.int64)
        pos[users] = np.arange(users.size)
        rows = pos[self._train.users]
        keep = rows >= 0
        if MODEL_TENSOR not in item_tensors:  # pruned: ease_b_index / ease_b_value
            pruned = self._pruned_b(item_tensors)
            return pruned.scores(rows[keep], self._train.items[keep], users.size)
        weights = np.asarray(item_tensors[MODEL_TENSOR], dtype=np.float32)
        if weights.shape != (self.num_items, self.num_items):
            raise ValueError(f"{MODEL_TENSOR} must be ({self.num_items}, {self.num_items})")
        x = np.zeros((users.size, self.num_items), dtype=np.float32)
        x[rows[keep], self._train.items[keep]] = 1.0
        scores: F32 = x @ weights
        return scores

    def _pruned_b(
        self, item_tensors: dict[str, F32] | dict[str, npt.NDArray[np.generic]]
    ) -> PrunedB:
        """The pruned ``B`` of these tensors, regrouped once per model (cached)."""
        value = item_tensors[VALUE_TENSOR]
        if self._pruned is None or self._pruned[0] is not value:
            index = item_tensors[INDEX_TENSOR]
            if index.shape[0] != self.num_items:
                raise ValueError(f"{INDEX_TENSOR} must have {self.num_items} rows")
            self._pruned = (value, PrunedB(np.asarray(index), np.asarray(value)))
        return self._pruned[1]

    def state_dict(self) -> dict[str, npt.NDArray[np.generic]]:
        """No private parameters: the rows are the local data itself."""
        return {"num_users": np.array([self.num_users], dtype=np.int64)}

    def load_state_dict(self, state: dict[str, npt.NDArray[np.generic]]) -> None:
        saved = int(np.asarray(state["num_users"]).reshape(-1)[0])
        if saved != self.num_users:
            raise ValueError(f"saved state is for {saved} users, not {self.num_users}")

    def save(self, path: str | Path) -> None:
        """Write the (trivial) state to a safetensors file (no pickle)."""
        _st_save_file({k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}, str(path))

    def load(self, path: str | Path) -> None:
        self.load_state_dict(dict(_st_load_file(str(path))))
