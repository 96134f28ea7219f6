"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019), numpy only.

EASE is a closed-form item–item model. With ``X`` the binary user × item matrix,
``G = XᵀX`` its Gram matrix and ``λ > 0``::

    P = (G + λI)⁻¹,    B = I − P / diag(P)     (column j divided by P_jj)

so ``B`` has a zero diagonal, and a user's scores are ``x_u B``. The only data statistic
is ``G``, a sum over users: a federation can sum per-participant Grams and solve once.
Hence the pieces are separate pure functions — :func:`item_gram` (what a participant
would compute), :func:`ease_weights` (what a coordinator would solve) — with no
dependency beyond numpy, so the coordinator can reuse them.

Cost for ``n`` items (dense solve; the Gram is dense in memory):

* ``ease_weights`` inverts with numpy's LAPACK binding, which computes in float64 whatever
  the input: beyond the Gram it peaks at ~2.4 ``n²`` float64 elements with
  ``overwrite=True`` (~3.4 ``n²`` without; measured at 3 000 items) — at ``n = 20 000``
  ~7.7 GB on top of the 3.2 GB Gram — and takes ~``n³`` flops: ~4 s at 3 000 items on
  a busy 2-core machine, so ~20 min at 20k items; under a second at ML-100K's 1 682.
  ``dtype=float32`` halves only the stored Gram and ``B``, not the solve's peak.
* ``item_gram`` expands only co-occurring pairs (``Σ_u n_u²`` of them) in chunks, or
  multiplies dense user blocks when that is cheaper (small catalogs).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .data import Interactions

__all__ = ["EASEModel", "PrunedB", "ease_weights", "item_gram"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.floating]

# Co-occurring pairs expanded at once in item_gram (one user alone may exceed it).
PAIR_CHUNK = 1 << 22
# A BLAS multiply-add is ~1000x cheaper than expanding one pair: pick the cheaper path.
DENSE_SPEEDUP = 1000.0
# (user, target) score terms accumulated at once by PrunedB.scores
SCORE_CHUNK = 1 << 23


def item_gram(
    users: IntArray,
    items: IntArray,
    num_items: int,
    *,
    dtype: type[np.floating] = np.float64,
) -> FloatArray:
    """The item–item co-occurrence matrix ``XᵀX`` of binary interactions.

    ``G[i, j]`` is the number of users who interacted with both ``i`` and ``j``
    (``G[i, i]`` the item's count). Duplicate (user, item) pairs count once.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError("users and items must be 1-d arrays of the same length")
    if items.size and (items.min() < 0 or items.max() >= num_items):
        raise ValueError(f"item indices must lie in [0, {num_items})")
    gram = np.zeros((num_items, num_items), dtype=dtype)
    if users.size == 0:
        return gram
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)  # sorted by user, deduped
    u, it = pairs[:, 0], pairs[:, 1]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    sizes = np.diff(np.r_[starts, u.size])
    cost = np.cumsum(sizes.astype(np.int64) ** 2)
    if 2.0 * starts.size * float(num_items) ** 2 < DENSE_SPEEDUP * float(cost[-1]):
        _dense_gram(gram, u, it)
        return gram
    flat = gram.reshape(-1)  # a view: gram is C-contiguous
    first = 0
    while first < sizes.size:  # bounded: every pass consumes at least one user
        done = int(cost[first - 1]) if first else 0
        last = max(first + 1, int(np.searchsorted(cost, done + PAIR_CHUNK, side="right")))
        seg_starts, seg_sizes = starts[first:last], sizes[first:last]
        # every (row, partner) pair inside each user's segment
        reps = np.repeat(seg_sizes, seg_sizes)
        rows = np.repeat(np.arange(seg_starts[0], seg_starts[-1] + seg_sizes[-1]), reps)
        row_seg_start = np.repeat(np.repeat(seg_starts, seg_sizes), reps)
        offsets = np.arange(rows.size) - np.repeat(np.cumsum(reps) - reps, reps)
        partners = row_seg_start + offsets
        keys = it[rows] * num_items + it[partners]
        if flat.size <= PAIR_CHUNK:  # small catalog: a dense count is faster than sorting
            flat += np.bincount(keys, minlength=flat.size)
        else:
            uniq, counts = np.unique(keys, return_counts=True)
            flat[uniq] += counts
        first = last
    return gram


def _dense_gram(gram: FloatArray, users: IntArray, items: IntArray) -> None:
    # Dense user blocks through BLAS: faster than expanding pairs for small catalogs.
    unique_users, rows = np.unique(users, return_inverse=True)
    block = max(1, PAIR_CHUNK // gram.shape[0])
    for first in range(0, unique_users.size, block):
        mask = (rows >= first) & (rows < first + block)
        x = np.zeros((min(block, unique_users.size - first), gram.shape[0]), dtype=gram.dtype)
        x[rows[mask] - first, items[mask]] = 1.0
        gram += x.T @ x


def ease_weights(
    gram: FloatArray,
    lam: float,
    *,
    dtype: type[np.floating] = np.float64,
    overwrite: bool = False,
) -> FloatArray:
    """Solve EASE: ``B = I − P / diag(P)`` with ``P = (G + λI)⁻¹``; ``B`` has a zero diagonal.

    Parameters
    ----------
    gram:
        The ``n × n`` item Gram matrix ``XᵀX``; left unchanged unless ``overwrite``.
    lam:
        L2 regularisation ``λ > 0`` (chosen on validation; it grows with data density).
    dtype:
        Precision of the result (see the module docstring for the memory cost).
    overwrite:
        Add ``λ`` to ``gram``'s diagonal in place (when it already has ``dtype``), saving
        one ``n²`` copy; ``gram`` is then consumed.
    """
    gram = np.asarray(gram)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"the Gram matrix must be square, got shape {gram.shape}")
    if not (np.isfinite(lam) and lam > 0):
        raise ValueError(f"lambda must be a finite positive number, got {lam}")
    if not np.isfinite(gram).all():
        raise ValueError("the Gram matrix contains NaN or Inf")
    reg = gram.astype(dtype, copy=not overwrite)
    reg[np.diag_indices_from(reg)] += lam
    precision = np.linalg.inv(reg).astype(dtype, copy=False)
    del reg  # free it before the element-wise pass: peak memory is the inverse's
    diag = np.diag(precision).copy()
    precision /= -diag[None, :]  # B_ij = -P_ij / P_jj off the diagonal
    precision[np.diag_indices_from(precision)] = 0.0
    weights: FloatArray = precision
    return weights


class EASEModel:
    """EASE fitted on a set of interactions; :meth:`score` is a metrics score function.

    Parameters
    ----------
    train:
        The interactions the model is fitted on; a user's scores use their rows here.
    lam:
        L2 regularisation ``λ``.
    dtype:
        Precision of the Gram, the solve and the scores.
    """

    def __init__(
        self, train: Interactions, lam: float, *, dtype: type[np.floating] = np.float64
    ) -> None:
        self.num_items = train.num_items
        self.dtype = dtype
        gram = item_gram(train.users, train.items, train.num_items, dtype=dtype)
        self.weights = ease_weights(gram, lam, dtype=dtype, overwrite=True)
        self._train = train

    def score(self, users: IntArray) -> FloatArray:
        """The ``(len(users), num_items)`` scores ``x_u B`` of the given users."""
        users = np.asarray(users, dtype=np.int64)
        pos = np.full(self._train.num_users, -1, dtype=np.int64)
        pos[users] = np.arange(users.size)
        rows = pos[self._train.users]
        keep = rows >= 0
        x = np.zeros((users.size, self.num_items), dtype=self.dtype)
        x[rows[keep], self._train.items[keep]] = 1.0
        scores: FloatArray = x @ self.weights
        return scores


class PrunedB:
    """``B`` pruned to ``k`` entries per column, scored without densifying it.

    ``index[j]`` lists the source items ``i`` kept for target item ``j`` (exact integers,
    float32 on the wire) and ``value[j]`` their weights ``B_ij``. Scores ``x_u B`` are the
    sum, over the user's items ``i``, of row ``i`` of ``B``: the columns are regrouped by
    source item once (``8 n k`` bytes), then each user's terms are accumulated, so memory
    is ``O(n k)`` plus the requested score matrix, never ``n²``.
    """

    def __init__(self, index: npt.NDArray[np.generic], value: npt.NDArray[np.generic]) -> None:
        index = np.asarray(index)
        value = np.asarray(value, dtype=np.float32)
        if index.ndim != 2 or index.shape != value.shape:
            raise ValueError("ease_b_index and ease_b_value must be 2-d arrays of one shape")
        n, k = index.shape
        source = index.reshape(-1).astype(np.int64)
        if source.size and (
            bool((source != index.reshape(-1)).any()) or source.min() < 0 or source.max() >= n
        ):
            raise ValueError(f"ease_b_index must hold item indices in [0, {n})")
        order = np.argsort(source, kind="stable")
        self.num_items = n
        self.targets = np.repeat(np.arange(n, dtype=np.int64), k)[order]
        self.weights = value.reshape(-1)[order]
        self.starts = np.r_[0, np.cumsum(np.bincount(source, minlength=n))].astype(np.int64)

    def scores(self, user_rows: IntArray, items: IntArray, num_rows: int) -> FloatArray:
        """``(num_rows, n)`` float32 scores: row ``r`` sums ``B``'s rows of the items
        paired with ``r`` (pairs ``(user_rows[t], items[t])``, a duplicate counted once)."""
        n = self.num_items
        out = np.zeros((num_rows, n), dtype=np.float32)
        if not items.size:
            return out
        pairs = np.unique(np.stack([user_rows, items], axis=1), axis=0)
        lengths = self.starts[pairs[:, 1] + 1] - self.starts[pairs[:, 1]]
        done = np.r_[0, np.cumsum(lengths)]
        first = 0
        while first < pairs.shape[0]:  # bounded: every pass consumes at least one pair
            last = max(
                first + 1, int(np.searchsorted(done, done[first] + SCORE_CHUNK, side="right")) - 1
            )
            seg = lengths[first:last]
            offsets = np.arange(int(seg.sum())) - np.repeat(np.cumsum(seg) - seg, seg)
            entries = np.repeat(self.starts[pairs[first:last, 1]], seg) + offsets
            # pairs are sorted by row: this chunk only touches rows low..high
            low, high = int(pairs[first, 0]), int(pairs[last - 1, 0]) + 1
            keys = (np.repeat(pairs[first:last, 0], seg) - low) * n + self.targets[entries]
            sums = np.bincount(keys, weights=self.weights[entries], minlength=(high - low) * n)
            out[low:high] += sums.reshape(high - low, n).astype(np.float32)
            first = last
        return out
