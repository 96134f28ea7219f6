"""Split a dataset's users across simulated participants.

Participants own *users* (with all their interactions), as in cross-silo
recommendation where each partner has its own customers:

* ``iid`` — users shuffled with a seed and dealt into ``n`` near-equal groups;
* ``skewed`` — non-IID by taste: users ordered by their coordinate on the leading
  non-popularity axis of the user-item matrix (its second singular vector, the first
  being mostly popularity/activity) and cut into ``n`` equal contiguous groups, so
  each participant sees a different region of item space;
* ``per-user`` — one participant per user (cross-device).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from participant_sdk.recsys.data import Interactions

__all__ = ["PartitionScheme", "partition_users", "local_view"]

PartitionScheme = Literal["iid", "skewed", "per-user"]
IntArray = npt.NDArray[np.int64]


def partition_users(
    inter: Interactions, scheme: PartitionScheme, n: int = 5, *, seed: int = 0
) -> list[IntArray]:
    """Return, per participant, the sorted global user indices it owns.

    Parameters
    ----------
    inter:
        The data whose users are split (typically the training data).
    scheme:
        ``"iid"``, ``"skewed"`` or ``"per-user"`` (``n`` is then ignored).
    n:
        Number of participants.
    seed:
        Seeds the ``iid`` shuffle (``skewed`` and ``per-user`` are deterministic).
    """
    users = np.arange(inter.num_users, dtype=np.int64)
    if scheme == "per-user":
        return [users[k : k + 1] for k in range(users.size)]
    if n < 1 or n > users.size:
        raise ValueError(f"n must be in [1, {users.size}], got {n}")
    if scheme == "iid":
        order = np.random.default_rng(seed).permutation(users)
    elif scheme == "skewed":
        order = users[np.argsort(_taste_axis(inter), kind="stable")]
    else:
        raise ValueError(f"unknown partition scheme {scheme!r}")
    return [np.sort(chunk).astype(np.int64) for chunk in np.array_split(order, n)]


def _taste_axis(inter: Interactions) -> npt.NDArray[np.float64]:
    """Each user's coordinate on the second left singular vector of the binary matrix."""
    matrix = np.zeros((inter.num_users, inter.num_items), dtype=np.float64)
    matrix[inter.users, inter.items] = 1.0
    # Row-normalise so heavy users do not dominate the taste axis.
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix /= np.where(norms > 0, norms, 1.0)
    # A dense SVD is fine at MovieLens-100K scale (the simulation's use case).
    u, _, _ = np.linalg.svd(matrix, full_matrices=False)
    axis = u[:, 1] if u.shape[1] > 1 else u[:, 0]
    # Fix the sign so the ordering does not depend on the LAPACK build.
    if axis[int(np.argmax(np.abs(axis)))] < 0:
        axis = -axis
    return np.asarray(axis, dtype=np.float64)


def local_view(inter: Interactions, users: IntArray) -> Interactions:
    """The interactions of ``users``, re-indexed to local users ``0..len(users)-1``.

    Items keep their (catalog) indices; ``user_ids`` lists the owned users' ids so
    ``local index k`` is global user ``users[k]``.
    """
    pos = np.full(inter.num_users, -1, dtype=np.int64)
    pos[users] = np.arange(users.size)
    local = pos[inter.users]
    mask = local >= 0
    return Interactions(
        users=local[mask],
        items=inter.items[mask],
        timestamps=inter.timestamps[mask],
        ratings=inter.ratings[mask],
        user_ids=[inter.user_ids[u] for u in users],
        item_ids=inter.item_ids,
    )
