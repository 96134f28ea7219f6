"""NDCG@10 per target user, for paired comparisons between models on the same users.

Shared by ``bench.cross_device`` (the paired test gap) and ``bench.smoothing`` /
``bench.averaging`` (per-round validation curves), which import each other's helpers
otherwise; a module of its own keeps the bench free of import cycles.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from participant_sdk.recsys import Interactions, seen_matrix

F32 = npt.NDArray[np.float32]
Score = Callable[[npt.NDArray[np.int64]], F32]


def per_user_ndcg(score: Score, train: Interactions, targets: Interactions) -> npt.NDArray:
    """NDCG@10 of each target user (EVALUATION.md's full ranking and tie rule), in the
    order of ``targets``: the mean is :func:`participant_sdk.recsys.evaluate_loo`'s."""
    users, items = targets.users, targets.items
    found = np.zeros(users.size)
    for start in range(0, users.size, 512):
        block = slice(start, min(start + 512, users.size))
        scores = np.asarray(score(users[block]))
        candidates = ~seen_matrix(train, users[block])
        rows = np.arange(scores.shape[0])
        target = scores[rows, items[block]][:, None]
        columns = np.arange(scores.shape[1])[None, :]
        ahead = (scores > target) | ((scores == target) & (columns < items[block][:, None]))
        ahead &= candidates
        ahead[rows, items[block]] = False
        ranks = ahead.sum(axis=1)
        found[block] = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
    return found
