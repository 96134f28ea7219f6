"""A built-in synthetic implicit-feedback dataset for demos and tests.

Users and items get planted low-rank taste vectors (a few latent "genres"), items a
Zipf-like popularity skew, and each user samples items with probability
proportional to ``popularity * exp(sharpness * taste·item)``. Personalised models
therefore beat popularity clearly, yet popularity is a meaningful floor — like real
data, at a size (a few hundred users and items) that trains in seconds.
"""

from __future__ import annotations

import numpy as np

from participant_sdk.recsys.data import Interactions

__all__ = ["make_synthetic"]


def make_synthetic(
    *,
    num_users: int = 300,
    num_items: int = 200,
    rank: int = 4,
    interactions_per_user: tuple[int, int] = (15, 60),
    popularity_exponent: float = 0.8,
    sharpness: float = 3.0,
    seed: int = 0,
) -> Interactions:
    """Generate a deterministic synthetic dataset.

    Parameters
    ----------
    num_users, num_items:
        Dataset size.
    rank:
        Number of planted latent dimensions ("genres").
    interactions_per_user:
        Inclusive range of each user's number of distinct items.
    popularity_exponent:
        Zipf exponent of the item popularity prior (0 = uniform).
    sharpness:
        How strongly taste (vs. popularity) drives choices.
    seed:
        Same seed, same dataset.

    Returns
    -------
    Interactions with user ids ``"u0".."u{n-1}"``-style numeric strings, item ids
    ``"0".."{m-1}"`` and increasing timestamps per user (so leave-one-out works).
    """
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((num_users, rank))
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    items = rng.standard_normal((num_items, rank))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    # popularity rank is shuffled so item index carries no signal
    popularity = 1.0 / (1.0 + rng.permutation(num_items)) ** popularity_exponent
    logits = sharpness * users @ items.T + np.log(popularity)[None, :]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    lo, hi = interactions_per_user
    counts = rng.integers(lo, hi + 1, size=num_users)
    u_list: list[np.ndarray] = []
    i_list: list[np.ndarray] = []
    t_list: list[np.ndarray] = []
    for u in range(num_users):
        n_u = int(min(counts[u], num_items))
        chosen = rng.choice(num_items, size=n_u, replace=False, p=probs[u])
        u_list.append(np.full(n_u, u, dtype=np.int64))
        i_list.append(chosen.astype(np.int64))
        t_list.append(1_000_000.0 + np.sort(rng.integers(0, 10_000_000, size=n_u)).astype(float))
    return Interactions(
        users=np.concatenate(u_list),
        items=np.concatenate(i_list),
        timestamps=np.concatenate(t_list),
        ratings=np.ones(int(counts.clip(max=num_items).sum())),
        user_ids=[str(u) for u in range(num_users)],
        item_ids=[str(i) for i in range(num_items)],
    )
