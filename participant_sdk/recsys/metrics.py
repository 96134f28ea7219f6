"""Ranking metrics of ``EVALUATION.md``: full ranking over unseen items, and sampled.

All functions take a *score function* ``score_fn(users) -> scores`` returning a
``(len(users), num_items)`` array, so they work for any model (MF, popularity, a
participant's deployed version) and compute the score matrix in blocks of users.

Tie rule (protocol §3): items are ordered by score descending, ties broken by item
index ascending, so the 0-based rank of target ``x`` among candidates ``C_u`` is
``|{j != x: s_j > s_x}| + |{j != x: s_j == s_x, j < x}|``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from .data import Interactions

__all__ = [
    "NEGATIVES_SEED",
    "ScoreFn",
    "draw_sampled_negatives",
    "evaluate_loo",
    "evaluate_sampled",
    "evaluate_split",
    "loo_ranks",
    "rank_metrics",
    "recommend",
    "seen_matrix",
    "top_k",
]

ScoreFn = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.floating]]
IntArray = npt.NDArray[np.int64]

NEGATIVES_SEED = 102
DEFAULT_BLOCK = 512


def seen_matrix(inter: Interactions, users: IntArray) -> npt.NDArray[np.bool_]:
    """Dense boolean ``(len(users), num_items)`` matrix of the users' interactions."""
    pos = np.full(inter.num_users, -1, dtype=np.int64)
    pos[users] = np.arange(users.size)
    out = np.zeros((users.size, inter.num_items), dtype=bool)
    rows = pos[inter.users]
    keep = rows >= 0
    out[rows[keep], inter.items[keep]] = True
    return out


def _ranks(
    scores: npt.NDArray[np.floating],
    candidates: npt.NDArray[np.bool_],
    targets: IntArray,
) -> IntArray:
    """0-based rank of each row's target among the row's candidate columns."""
    rows = np.arange(targets.size)
    target_scores = scores[rows, targets][:, None]
    columns = np.arange(scores.shape[1])[None, :]
    ahead = (scores > target_scores) | ((scores == target_scores) & (columns < targets[:, None]))
    ahead &= candidates
    ahead[rows, targets] = False
    ranks: IntArray = ahead.sum(axis=1).astype(np.int64)
    return ranks


def rank_metrics(ranks: IntArray, k: int = 10) -> dict[str, float]:
    """HR@K, NDCG@K, Precision@K, Recall@K from 0-based ranks of one target per user."""
    if ranks.size == 0:
        return {f"hr@{k}": 0.0, f"ndcg@{k}": 0.0, f"precision@{k}": 0.0, f"recall@{k}": 0.0}
    hit = ranks < k
    hr = float(hit.mean())
    ndcg = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    return {f"hr@{k}": hr, f"ndcg@{k}": ndcg, f"precision@{k}": hr / k, f"recall@{k}": hr}


def _blocks(n: int, block: int) -> list[slice]:
    return [slice(s, min(s + block, n)) for s in range(0, n, block)]


def evaluate_loo(
    score_fn: ScoreFn,
    train: Interactions,
    targets: Interactions,
    *,
    k: int = 10,
    block: int = DEFAULT_BLOCK,
) -> dict[str, float]:
    """Leave-one-out full-ranking metrics (protocol §3).

    Parameters
    ----------
    score_fn:
        ``users -> (len(users), num_items)`` scores.
    train:
        The data the model was trained on; its items are excluded from each user's
        candidates (``Tr_u`` when validating, ``Tr_u ∪ {v_u}`` when testing).
    targets:
        One held-out interaction per evaluated user (the split's ``valid`` or ``test``).

    Returns
    -------
    ``{"hr@10", "ndcg@10", "precision@10", "recall@10"}`` (with the given ``k``).
    """
    return rank_metrics(loo_ranks(score_fn, train, targets, block=block), k)


def loo_ranks(
    score_fn: ScoreFn, train: Interactions, targets: Interactions, *, block: int = DEFAULT_BLOCK
) -> IntArray:
    """Each target's 0-based rank among its user's candidates (:func:`evaluate_loo`'s
    ranking and tie rule), in the order of ``targets``: per-user metrics for a paired
    comparison of two models on the same users."""
    users, items = targets.users, targets.items
    ranks = np.empty(users.size, dtype=np.int64)
    for sl in _blocks(users.size, block):
        scores = np.asarray(score_fn(users[sl]))
        candidates = ~seen_matrix(train, users[sl])
        ranks[sl] = _ranks(scores, candidates, items[sl])
    return ranks


def draw_sampled_negatives(
    full: Interactions, users: IntArray, *, n: int = 99, seed: int = NEGATIVES_SEED
) -> IntArray:
    """Draw ``n`` negatives per user from the items the user never interacted with.

    Users are processed in ascending index order with one generator, and the pool is
    ``sorted(I \\ items_u)`` with ``rng.choice(pool, size=n, replace=False)``, as in
    protocol §3. Returns an ``(len(users), n)`` array aligned with sorted ``users``.
    """
    rng = np.random.default_rng(seed)
    order = np.sort(users)
    seen = seen_matrix(full, order)
    out = np.empty((order.size, n), dtype=np.int64)
    for row in range(order.size):
        pool = np.flatnonzero(~seen[row])
        out[row] = rng.choice(pool, size=n, replace=False)
    # re-align with the caller's user order
    where = np.searchsorted(order, users)
    return out[where]


def evaluate_sampled(
    score_fn: ScoreFn,
    targets: Interactions,
    negatives: IntArray,
    *,
    k: int = 10,
    block: int = DEFAULT_BLOCK,
) -> dict[str, float]:
    """Sampled metrics: rank each target among itself and its row of ``negatives``.

    Use :func:`draw_sampled_negatives` (or the protocol's fixed file) for
    ``negatives``; row ``r`` belongs to ``targets.users[r]``. Keys are prefixed
    ``"sampled_"`` (``"sampled_hr@10"``, ``"sampled_ndcg@10"``).
    """
    users, items = targets.users, targets.items
    ranks = np.empty(users.size, dtype=np.int64)
    for sl in _blocks(users.size, block):
        scores = np.asarray(score_fn(users[sl]))
        cand_items = np.concatenate([items[sl, None], negatives[sl]], axis=1)
        cand_scores = np.take_along_axis(scores, cand_items, axis=1)
        target = cand_scores[:, :1]
        ahead = (cand_scores > target) | ((cand_scores == target) & (cand_items < items[sl, None]))
        ranks[sl] = ahead[:, 1:].sum(axis=1)
    m = rank_metrics(ranks, k)
    return {f"sampled_hr@{k}": m[f"hr@{k}"], f"sampled_ndcg@{k}": m[f"ndcg@{k}"]}


def top_k(scores: npt.NDArray[np.floating], exclude: npt.NDArray[np.bool_], k: int) -> IntArray:
    """Top-``k`` item indices per row, excluding masked items; ties by index ascending.

    Rows with fewer than ``k`` allowed items are padded with ``-1``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        single: IntArray = top_k(scores[None, :], exclude.reshape(1, -1), k)[0]
        return single
    n_items = scores.shape[1]
    k_eff = min(k, n_items)
    # Sort key: allowed first, then score descending, then index ascending (lexsort
    # uses the last key as primary). NaN scores sort after every number.
    neg = np.where(np.isnan(scores), np.inf, -scores)
    index = np.broadcast_to(np.arange(n_items), scores.shape)
    order = np.lexsort((index, neg, exclude), axis=-1)[:, :k_eff]
    allowed = ~np.take_along_axis(exclude, order, axis=1)
    out = np.where(allowed, order, -1).astype(np.int64)
    if k_eff < k:
        out = np.concatenate([out, np.full((out.shape[0], k - k_eff), -1, np.int64)], axis=1)
    return out


def recommend(
    scores: npt.NDArray[np.floating], seen: npt.NDArray[np.bool_], k: int = 10
) -> IntArray:
    """Top-``k`` items the user has not interacted with (never a seen item).

    ``scores`` is ``(num_items,)`` for one user or ``(users, num_items)``; ``seen`` is
    a boolean mask of the same shape. Ties are broken by item index ascending, and
    missing slots (fewer than ``k`` unseen items) are ``-1``.
    """
    return top_k(scores, seen, k)


def evaluate_split(
    score_fn: ScoreFn,
    train: Interactions,
    test: Interactions,
    *,
    k: int = 10,
    block: int = DEFAULT_BLOCK,
) -> dict[str, float]:
    """80/20 (multi-target) metrics of protocol §4: P@K, R@K, NDCG@K, HR@K.

    Candidates are the items not in the user's ``train``; users with no ``test``
    item are not evaluated.
    """
    users = np.unique(test.users)
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    hits_total = prec = rec = ndcg = 0.0
    hr = 0.0
    for sl in _blocks(users.size, block):
        block_users = users[sl]
        scores = np.asarray(score_fn(block_users))
        top = top_k(scores, seen_matrix(train, block_users), k)
        relevant = seen_matrix(test, block_users)
        safe = np.where(top >= 0, top, 0)
        hit = np.take_along_axis(relevant, safe, axis=1) & (top >= 0)
        n_rel = relevant.sum(axis=1)
        hits = hit.sum(axis=1)
        dcg = (hit * discounts).sum(axis=1)
        idcg = np.cumsum(discounts)[np.minimum(n_rel, k) - 1]
        prec += float((hits / k).sum())
        rec += float((hits / n_rel).sum())
        ndcg += float((dcg / idcg).sum())
        hr += float((hits > 0).sum())
        hits_total += float(hits.sum())
    n = max(users.size, 1)
    return {
        f"precision@{k}": prec / n,
        f"recall@{k}": rec / n,
        f"ndcg@{k}": ndcg / n,
        f"hr@{k}": hr / n,
    }
