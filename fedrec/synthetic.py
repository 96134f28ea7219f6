"""A built-in synthetic implicit-feedback dataset that looks like real logs.

Tests and demos of models, convergence and stability should not need MovieLens, so the
generator reproduces the traits real interaction logs share and that change how a
recommender behaves on them:

* **Long-tailed item popularity.** A Zipf prior ``1 / rank^popularity_exponent`` over a
  shuffled ranking (the item index carries no signal): a few items hold a large share
  of the interactions, most items are rare.
* **Long-tailed user activity.** Each user's number of distinct items is log-normal
  (median ``sqrt(lo * hi)`` by default), clipped to ``interactions_per_user``: many
  light users, a few heavy ones.
* **Latent-factor taste.** Users and items get unit vectors in ``rank`` planted
  "genres"; a user picks items with probability proportional to
  ``popularity * exp(sharpness * taste·item)``, so personalised models beat
  popularity clearly, yet popularity stays a meaningful floor.
* **Interaction strength** (``ratings``, when ``strengths``): play-count-like positive
  integers, ``1 + GammaPoisson`` (negative binomial: overdispersed, heavy tailed), with
  a log-normal per-user volume and a mean that grows with the user's affinity for the
  item, so strength carries signal a confidence-weighted model can use.
* **Temporal drift** (``timestamps``): a user's taste moves from a start to an end
  vector over their active period, visited in ``DRIFT_SEGMENTS`` steps, and later
  interactions get later timestamps; what a user does last is a little better
  predicted by their recent items than by their old ones. Without timestamps the
  column is NaN, as for a source that has none.

Everything comes from one ``numpy`` generator seeded by ``seed``: same arguments, same
dataset. Cost is ``O(num_users * DRIFT_SEGMENTS * num_items * rank)`` with no dense
user-item matrix, so 10^4 users x 10^4 items takes seconds.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from participant_sdk.recsys.data import Interactions

__all__ = ["DRIFT_SEGMENTS", "make_synthetic"]

# A user's interactions are drawn in this many consecutive segments, each with the taste
# of its midpoint in time: enough for drift to show, few enough to stay vectorised.
DRIFT_SEGMENTS = 4
# Timestamps span this many seconds (about two years), starting at 2001-09-09.
TIME_ORIGIN, TIME_SPAN = 1_000_000_000.0, 6.3e7

F64 = npt.NDArray[np.float64]


def _unit_rows(rng: np.random.Generator, rows: int, rank: int) -> F64:
    vectors = rng.standard_normal((rows, rank))
    unit: F64 = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


def _activity(
    rng: np.random.Generator, num_users: int, lo: int, hi: int, sigma: float
) -> npt.NDArray[np.int64]:
    """Log-normal item counts per user, median ``sqrt(lo * hi)``, clipped to ``[lo, hi]``."""
    median = math.sqrt(lo * hi)
    raw = np.exp(math.log(median) + sigma * rng.standard_normal(num_users))
    return np.clip(np.rint(raw), lo, hi).astype(np.int64)


def make_synthetic(
    *,
    num_users: int = 300,
    num_items: int = 300,
    rank: int = 4,
    interactions_per_user: tuple[int, int] = (5, 100),
    activity_sigma: float = 0.8,
    popularity_exponent: float = 1.0,
    sharpness: float = 4.0,
    strengths: bool = True,
    strength_mean: float = 3.0,
    strength_dispersion: float = 0.5,
    timestamps: bool = True,
    drift: float = 0.5,
    seed: int = 0,
) -> Interactions:
    """Generate a deterministic synthetic dataset (see the module docstring).

    Parameters
    ----------
    num_users, num_items:
        Dataset size. The defaults (~9k interactions) train in seconds.
    rank:
        Number of planted latent dimensions ("genres").
    interactions_per_user:
        ``(lo, hi)``: bounds of each user's number of distinct items (also capped at
        ``num_items``). ``lo >= 3`` gives every user a validation and a test item.
    activity_sigma:
        Spread of the log-normal user activity around its median ``sqrt(lo * hi)``;
        0 gives every user the median, larger values a longer tail of heavy users.
    popularity_exponent:
        Zipf exponent of the item popularity prior (0 = uniform; real logs ~0.7-1.2).
    sharpness:
        How strongly taste (vs. popularity) drives choices (0 = popularity only).
    strengths:
        Fill ``ratings`` with play-count-like strengths; ``False`` gives all ones.
    strength_mean:
        Mean strength of an interaction of average affinity (>= 1).
    strength_dispersion:
        Negative-binomial shape of the counts above 1: smaller is heavier tailed
        (variance ``m + m^2 / dispersion``).
    timestamps:
        Give interactions timestamps in drift order; ``False`` leaves them NaN.
    drift:
        How far a user's taste moves over their active period (0 = none): the end
        taste is the start taste plus ``drift`` times a random unit vector.
    seed:
        Same seed (and arguments), same dataset.

    Returns
    -------
    Interactions
        User ids ``"0".."{n-1}"``, item ids ``"0".."{m-1}"``, one interaction per
        (user, item) pair, strengths in ``ratings`` and, with ``timestamps``, distinct
        increasing timestamps per user (so leave-one-out is well defined).
    """
    lo, hi = interactions_per_user
    if not 1 <= lo <= hi:
        raise ValueError(f"interactions_per_user must be 1 <= lo <= hi, got {lo, hi}")
    if num_users < 1 or num_items < 1 or rank < 1:
        raise ValueError("num_users, num_items and rank must be >= 1")
    if strength_mean < 1.0 or strength_dispersion <= 0.0:
        raise ValueError("strength_mean must be >= 1 and strength_dispersion > 0")
    rng = np.random.default_rng(seed)
    items = _unit_rows(rng, num_items, rank)
    start = _unit_rows(rng, num_users, rank)
    end = start + drift * _unit_rows(rng, num_users, rank)
    end /= np.linalg.norm(end, axis=1, keepdims=True)
    # popularity rank is shuffled so item index carries no signal
    log_pop = -popularity_exponent * np.log1p(rng.permutation(num_items).astype(np.float64))
    counts = np.minimum(_activity(rng, num_users, lo, hi, activity_sigma), num_items)
    volume = np.exp(0.5 * rng.standard_normal(num_users))  # heavy and light listeners
    # each user is active over a random window of the global time span
    begin = rng.random(num_users) * 0.7
    length = (1.0 - begin) * (0.1 + 0.9 * rng.random(num_users))

    u_parts: list[npt.NDArray[np.int64]] = []
    i_parts: list[npt.NDArray[np.int64]] = []
    affinity_parts: list[F64] = []
    time_parts: list[F64] = []
    for u in range(num_users):
        n_u = int(counts[u])
        # split n_u over the segments as evenly as possible, earlier segments first
        sizes = np.full(DRIFT_SEGMENTS, n_u // DRIFT_SEGMENTS)
        sizes[: n_u % DRIFT_SEGMENTS] += 1
        available = np.ones(num_items, dtype=bool)
        for segment, size in enumerate(sizes.tolist()):
            if size == 0:
                continue
            t = (segment + 0.5) / DRIFT_SEGMENTS
            taste = (1.0 - t) * start[u] + t * end[u]
            taste /= np.linalg.norm(taste)
            affinity = items @ taste
            logits = sharpness * affinity + log_pop
            weights = np.where(available, np.exp(logits - logits[available].max()), 0.0)
            chosen = rng.choice(num_items, size=size, replace=False, p=weights / weights.sum())
            available[chosen] = False
            u_parts.append(np.full(size, u, dtype=np.int64))
            i_parts.append(chosen.astype(np.int64))
            affinity_parts.append(affinity[chosen])
            # segment times: a sorted uniform draw inside this segment of the user's window
            offsets = np.sort(rng.random(size)) + segment
            time_parts.append(begin[u] + length[u] * offsets / DRIFT_SEGMENTS)

    users = np.concatenate(u_parts)
    item_index = np.concatenate(i_parts)
    if strengths:
        # 1 + Gamma-Poisson counts: overdispersed, mean rising with affinity and volume
        mean = (strength_mean - 1.0) * volume[users] * np.exp(np.concatenate(affinity_parts))
        rate = rng.gamma(strength_dispersion, mean / strength_dispersion)
        ratings = 1.0 + rng.poisson(rate).astype(np.float64)
    else:
        ratings = np.ones(users.size)
    if timestamps:
        # whole seconds, strictly increasing per user (ties would make the split arbitrary)
        times = np.floor(TIME_ORIGIN + TIME_SPAN * np.concatenate(time_parts))
        times += np.arange(times.size) - np.searchsorted(users, users)  # rank within user
    else:
        times = np.full(users.size, np.nan)
    return Interactions(
        users=users,
        items=item_index,
        timestamps=times,
        ratings=ratings,
        user_ids=[str(u) for u in range(num_users)],
        item_ids=[str(i) for i in range(num_items)],
    )
