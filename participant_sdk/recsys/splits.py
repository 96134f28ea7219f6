"""Train / validation / test splits exactly as in ``EVALUATION.md`` (protocol v1).

* :func:`leave_one_out` — per user, ordered by ``(timestamp, item index)``, the last
  interaction is the test item and the second-to-last the validation item; users
  with fewer than 3 interactions are training-only. Without timestamps a key per
  interaction is drawn from ``default_rng(101)`` in ``(user, item)`` order.
* :func:`split_80_20` — per user with at least 5 interactions, in user-index order,
  ``default_rng(103).permutation(n_u)`` over the user's items in ascending item order;
  the first ``floor(0.2 n_u + 0.5)`` positions go to test.

Indices are those of the input :class:`~participant_sdk.recsys.data.Interactions`,
which the loaders already build in ascending raw-id order (protocol step 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .data import Interactions

__all__ = ["LeaveOneOutSplit", "RandomSplit", "leave_one_out", "leave_one_out_keys", "split_80_20"]

LOO_SEED = 101
SPLIT_8020_SEED = 103


@dataclass
class LeaveOneOutSplit:
    """A leave-one-out split.

    Attributes
    ----------
    train:
        ``Tr_u`` for every user (all interactions of users with < 3 interactions).
    valid, test:
        One interaction per evaluated user (``v_u`` and ``t_u``), in ascending user
        order.
    """

    train: Interactions
    valid: Interactions
    test: Interactions

    def train_and_valid(self) -> Interactions:
        """``Tr_u ∪ {v_u}``: the data of the final fit, evaluated on :attr:`test`."""
        return concat(self.train, self.valid)


@dataclass
class RandomSplit:
    """An 80/20 per-user split: ``train`` and ``test`` interactions."""

    train: Interactions
    test: Interactions


def concat(a: Interactions, b: Interactions) -> Interactions:
    """Concatenate two interaction sets that share the same id maps."""
    if a.user_ids is not b.user_ids and a.user_ids != b.user_ids:
        raise ValueError("interaction sets have different user maps")
    if a.item_ids is not b.item_ids and a.item_ids != b.item_ids:
        raise ValueError("interaction sets have different item maps")
    return Interactions(
        users=np.concatenate([a.users, b.users]),
        items=np.concatenate([a.items, b.items]),
        timestamps=np.concatenate([a.timestamps, b.timestamps]),
        ratings=np.concatenate([a.ratings, b.ratings]),
        user_ids=a.user_ids,
        item_ids=a.item_ids,
    )


def _time_keys(inter: Interactions, seed: int) -> npt.NDArray[np.float64]:
    ts = inter.timestamps
    if len(inter) and bool(np.isnan(ts).all()):
        # No timestamps: random keys, drawn in ascending (user, item) order.
        order = np.lexsort((inter.items, inter.users))
        keys = np.empty(len(inter), dtype=np.float64)
        keys[order] = np.random.default_rng(seed).random(len(inter))
        return keys
    # A partially dated file: undated rows count as the oldest.
    return np.where(np.isnan(ts), -np.inf, ts)


def leave_one_out_keys(inter: Interactions, *, seed: int = LOO_SEED) -> npt.NDArray[np.float64]:
    """The order keys :func:`leave_one_out` sorts each user's interactions by.

    Undated data gets random keys drawn over the *whole* data set, so a subset of its
    users split on its own would get other held-out items; giving the subset these keys
    as its timestamps reproduces the whole set's split for its users.
    """
    return _time_keys(inter, seed)


def leave_one_out(inter: Interactions, *, seed: int = LOO_SEED) -> LeaveOneOutSplit:
    """Split per user: last interaction → test, second-to-last → validation.

    Ties in timestamp are broken by item index (the larger index is more recent).
    """
    n = len(inter)
    keys = _time_keys(inter, seed)
    order = np.lexsort((inter.items, keys, inter.users))
    users_sorted = inter.users[order]
    counts = np.bincount(inter.users, minlength=inter.num_users)
    # position of each row within its user's ordered list, counted from the end
    ends = np.cumsum(counts)
    from_end = ends[users_sorted] - 1 - np.arange(n)
    evaluated = counts[users_sorted] >= 3
    role = np.zeros(n, dtype=np.int8)  # 0 train, 1 valid, 2 test
    role[order[evaluated & (from_end == 0)]] = 2
    role[order[evaluated & (from_end == 1)]] = 1
    train = inter.subset(role == 0)
    valid = _sorted_by_user(inter.subset(role == 1))
    test = _sorted_by_user(inter.subset(role == 2))
    return LeaveOneOutSplit(train=train, valid=valid, test=test)


def _sorted_by_user(inter: Interactions) -> Interactions:
    order = np.lexsort((inter.items, inter.users))
    mask_idx = order
    return Interactions(
        users=inter.users[mask_idx],
        items=inter.items[mask_idx],
        timestamps=inter.timestamps[mask_idx],
        ratings=inter.ratings[mask_idx],
        user_ids=inter.user_ids,
        item_ids=inter.item_ids,
    )


def split_80_20(inter: Interactions, *, seed: int = SPLIT_8020_SEED) -> RandomSplit:
    """Random per-user 80/20 split; users with < 5 interactions are training-only."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((inter.items, inter.users))
    counts = np.bincount(inter.users, minlength=inter.num_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    is_test = np.zeros(len(inter), dtype=bool)
    for user in range(inter.num_users):
        n_u = int(counts[user])
        if n_u < 5:
            continue
        perm = rng.permutation(n_u)
        n_test = int(np.floor(0.2 * n_u + 0.5))
        rows = order[starts[user] : starts[user] + n_u]
        is_test[rows[perm[:n_test]]] = True
    return RandomSplit(train=inter.subset(~is_test), test=inter.subset(is_test))
