"""A cross-device federation with Poisson client sampling and DP-FedAvg, in-process.

The privacy frontier benchmark (``bench.privacy_frontier``) runs it: one participant per
user, and each round every user joins independently with probability ``q`` (Poisson
sampling), so only the sampled users train, and a user's privacy is amplified by the
chance of sitting the round out. A sampled user trains its own
:class:`~participant_sdk.recsys.model.BPRTrainer` (its private user factor persists across
the rounds it joins), encodes its row-sparse delta with the wire codec and the "server"
decodes it and folds it into the coordinator's strategy
(:func:`coordinator.domain.strategy.build_strategy`, the ``mean`` aggregator with
``total`` normalization and ``uniform`` weights, as under ``privacy.dp``).

DP-FedAvg (McMahan et al. 2018) with sampling: each update is clipped to L2 norm ``C``,
the clipped updates are summed, Gaussian noise of std ``z * C`` is added to every
coordinate of the sum (the coordinator's :class:`~coordinator.domain.privacy.DPAggregation`),
and the sum is divided by the **expected** cohort size ``q * N``, a constant, so that the
published model is a function of the noised sum only (dividing by the realised cohort
size would publish that size, which depends on who was sampled). The coordinator's
aggregator divides by the realised count; :class:`_ExpectedCohort` rescales its mean by
``count / (q N)`` before the server optimizer, which is the same arithmetic.

Evaluation needs every user's factor, including users never sampled: after the last round
each participant fits its own factor to the final model locally (user-only epochs, items
frozen), which reads only its own data and publishes nothing, so it costs no privacy.
The noise seeds are derived from ``seed`` so that a benchmark is repeatable (the
coordinator draws them from a CSPRNG).

Adaptive clipping (``SampledDP.adaptive_clipping``, Andrew et al. 2021) runs the
coordinator's own arithmetic (:mod:`coordinator.domain.privacy`): ``clip_norm`` is the
first round's C; each round the aggregator counts the updates it did not clip, Gaussian
noise of std sigma_b (:func:`~coordinator.domain.privacy.count_stddev` of the expected
cohort) joins the count, and :func:`~coordinator.domain.privacy.next_clip_norm` moves C
towards the target quantile. The updates' sum gets the smaller multiplier z_delta
(:func:`~coordinator.domain.privacy.update_noise_multiplier`), so the pair costs what one
Gaussian mechanism of ``noise_multiplier`` does and the PLD epsilon of
``noise_multiplier`` stays the one reported.

Any server optimizer of the coordinator (``strategy["name"]``: ``fedavgm``, ``fedadam``,
...) can follow the noised mean: it only post-processes it, at no privacy cost.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from coordinator.domain.accountant import pld_epsilon
from coordinator.domain.aggregation import WeightedMean
from coordinator.domain.privacy import (
    DPAggregation,
    count_stddev,
    next_clip_norm,
    update_noise_multiplier,
)
from coordinator.domain.specs import AdaptiveClipping, DifferentialPrivacy, StrategySpec
from coordinator.domain.strategy import Aggregator, ServerState, build_strategy
from participant_sdk.recsys.data import Interactions
from participant_sdk.recsys.model import BPRConfig, BPRTrainer, init_item_tensors
from participant_sdk.wire import Update, decode_update, encode_update, mf_spec

__all__ = [
    "AdaptiveClipping",
    "SampledDP",
    "SampledResult",
    "noise_for_epsilon",
    "per_user_views",
    "pld_epsilon",
    "simulate_sampled",
]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SampledDP:
    """One federation's sampling and privacy settings.

    ``clip_norm`` None: no clipping and no noise (the non-private reference);
    ``noise_multiplier`` 0 with a clip norm: clipping only. ``adaptive_clipping``:
    ``clip_norm`` is the first round's C, and ``noise_multiplier`` the z the accountant
    sees (the count's noise and the updates' z_delta share it).
    """

    sampling_rate: float
    rounds: int
    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    adaptive_clipping: AdaptiveClipping | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.sampling_rate <= 1.0:
            raise ValueError("sampling_rate must be in (0, 1]")
        if self.rounds < 0 or self.noise_multiplier < 0:
            raise ValueError("rounds and noise_multiplier must be >= 0")
        if self.noise_multiplier > 0 and self.clip_norm is None:
            raise ValueError("noise needs a clip_norm")
        if self.adaptive_clipping is not None and self.clip_norm is None:
            raise ValueError("adaptive clipping needs an initial clip_norm")
        self.policy()  # the coordinator's checks (a pydantic ValidationError is a ValueError)

    def policy(self) -> DifferentialPrivacy | None:
        """The coordinator's ``privacy.dp`` for these settings (None without clipping);
        validating it refuses what the coordinator would (e.g. a too small sigma_b)."""
        if self.clip_norm is None:
            return None
        return DifferentialPrivacy(
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            adaptive_clipping=self.adaptive_clipping,
        )


@dataclass
class SampledResult:
    """The final global item tensors and every user's (locally fitted) factor."""

    item_tensors: dict[str, F32]
    user_factors: F32
    cohort_sizes: list[int] = field(default_factory=list)
    clipped_fraction: list[float] = field(default_factory=list)
    # the C each round clipped to (constant without adaptive clipping)
    clip_norms: list[float] = field(default_factory=list)
    # the multiplier of the noise on the updates' sum (z_delta under adaptive clipping)
    update_noise_multiplier: float = 0.0
    seconds: float = 0.0

    def score(self, users: npt.NDArray[np.int64]) -> F32:
        q = self.item_tensors["item_factors"]
        b = self.item_tensors["item_bias"]
        return np.asarray(self.user_factors[users] @ q.T + b[None, :], dtype=np.float32)


@lru_cache(maxsize=256)
def noise_for_epsilon(
    epsilon: float,
    sampling_rate: float,
    rounds: int,
    delta: float,
    *,
    tolerance: float = 0.005,
) -> float:
    """The smallest noise multiplier ``z`` (to ``tolerance``, relative) whose PLD epsilon
    (the coordinator's reported accountant, :func:`pld_epsilon`) after ``rounds``
    Poisson-sampled rounds at ``sampling_rate`` is at most ``epsilon`` at ``delta``.

    Bisection on ``z``: epsilon falls as ``z`` grows. Each step is one PLD composition
    (well under a second), so a calibration costs a few seconds.
    """
    if epsilon <= 0 or not np.isfinite(epsilon):
        raise ValueError("epsilon must be positive and finite")
    low, high = 0.05, 1.0
    while pld_epsilon(high, sampling_rate, rounds, delta) > epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier reaches epsilon {epsilon:g}")
    while high - low > tolerance * high:
        middle = round((low + high) / 2, 6)  # rounded: the accountant caches by value
        if pld_epsilon(middle, sampling_rate, rounds, delta) > epsilon:
            low = middle
        else:
            high = middle
    return high


def per_user_views(train: Interactions) -> list[Interactions]:
    """Each user's interactions as a one-user local dataset (local user index 0), in
    one sort instead of one scan of the whole data per user."""
    order = np.argsort(train.users, kind="stable")
    starts = np.searchsorted(train.users[order], np.arange(train.num_users + 1))
    views = []
    for u in range(train.num_users):
        rows = order[starts[u] : starts[u + 1]]
        views.append(
            Interactions(
                users=np.zeros(rows.size, dtype=np.int64),
                items=train.items[rows],
                timestamps=train.timestamps[rows],
                ratings=train.ratings[rows],
                user_ids=[train.user_ids[u]],
                item_ids=train.item_ids,
            )
        )
    return views


class _ExpectedCohort:
    """The coordinator's aggregator, its mean rescaled from the realised number of updates
    to the expected cohort size: ``(sum + noise) / (q N)`` (see the module docstring)."""

    def __init__(self, inner: Aggregator, expected: float) -> None:
        self.inner = inner
        self.expected = expected
        self.count = inner.count

    def add(self, update: Update) -> None:
        self.inner.add(update)
        self.count = self.inner.count

    def mean_deltas(self) -> Iterator[tuple[str, npt.NDArray[np.float64]]]:
        # the inner mean divided by max(count, 1) (its denominator when nobody was sampled)
        factor = max(self.inner.count, 1) / self.expected
        for name, delta in self.inner.mean_deltas():
            yield name, delta * factor

    def touched(self, name: str) -> npt.NDArray[np.bool_]:
        return self.inner.touched(name)


def simulate_sampled(
    train: Interactions,
    config: BPRConfig,
    dp: SampledDP,
    *,
    strategy: dict[str, Any],
    lr_decay_per_round: float = 1.0,
    refit_epochs: int = 5,
    seed: int = 0,
    views: list[Interactions] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SampledResult:
    """Run ``dp.rounds`` rounds of sampled (DP-)FedAvg, one participant per user.

    ``strategy`` holds :class:`~coordinator.domain.specs.StrategySpec` fields (``name``,
    ``server_lr``, ``server_momentum``, ...); the aggregator is always the DP-compatible
    ``mean`` with ``total`` normalization and ``uniform`` weights. The local learning rate
    of round ``r`` is ``config.learning_rate * lr_decay_per_round ** r``. Sampling draws
    from a generator seeded by ``seed`` (the coordinator would use a CSPRNG).
    """
    start = time.perf_counter()
    views = per_user_views(train) if views is None else views
    population = len(views)
    expected = dp.sampling_rate * population
    spec = mf_spec(num_items=train.num_items, dim=config.dim)
    settings = {**strategy, "aggregator": "mean", "normalization": "total", "weighting": "uniform"}
    strategy_spec = StrategySpec.model_validate(settings)
    tensors = init_item_tensors(
        train.num_items, config.dim, seed=config.seed, scale=config.init_scale
    )
    state: ServerState = {}
    trainers: dict[int, BPRTrainer] = {}
    rng = np.random.default_rng([seed, 0x5A3D])
    result = SampledResult(item_tensors=tensors, user_factors=np.zeros((0, config.dim), np.float32))
    policy = dp.policy()
    adaptive = dp.adaptive_clipping
    # adaptive clipping: sigma_b of the count (of the expected cohort, as the coordinator
    # does for a sampled round) and the updates' share z_delta of the noise
    count_std = count_stddev(policy, expected) if policy and adaptive else 0.0
    z_updates = (
        update_noise_multiplier(dp.noise_multiplier, count_std) if adaptive else dp.noise_multiplier
    )
    result.update_noise_multiplier = z_updates
    count_rng = np.random.default_rng([seed, 0xC0C7])
    clip_norm = dp.clip_norm

    def trainer_of(user: int) -> BPRTrainer:
        if user not in trainers:
            trainers[user] = BPRTrainer(
                num_users=1,
                num_items=train.num_items,
                config=config.replace(seed=config.seed * 1_000_003 + user),
            )
        return trainers[user]

    for r in range(dp.rounds):
        lr = config.learning_rate * lr_decay_per_round**r
        aggregation = None
        if clip_norm is not None:
            noise_seed = hashlib.sha256(b"frontier/%d/%d" % (seed, r + 1)).digest()
            aggregation = DPAggregation(clip_norm, z_updates, noise_seed)
        built = build_strategy(strategy_spec, spec, dp=aggregation)
        mean = built.aggregator
        assert isinstance(mean, WeightedMean)
        built.aggregator = _ExpectedCohort(mean, expected)
        cohort = np.flatnonzero(rng.random(population) < dp.sampling_rate)
        for user in cohort.tolist():
            local = views[user]
            if not len(local):
                continue
            update = trainer_of(user).train_round(tensors, local, learning_rate=lr)
            payload = encode_update(
                update.sparse_delta(),
                round=r + 1,
                base_version=r,
                num_examples=update.num_examples,
                rows=update.rows,
            )
            built.add(decode_update(payload, spec))
        tensors, state = built.result(tensors, state)
        result.cohort_sizes.append(int(cohort.size))
        # the aggregator counted the unclipped updates from the norms it clipped with
        clipped = mean.count - mean.unclipped if clip_norm is not None else 0
        result.clipped_fraction.append(clipped / max(cohort.size, 1))
        if clip_norm is not None:
            result.clip_norms.append(clip_norm)
            if adaptive is not None:
                noise = float(count_rng.normal(0.0, count_std))
                clip_norm, _ = next_clip_norm(clip_norm, mean.unclipped, expected, noise, adaptive)
        if progress is not None and ((r + 1) % 10 == 0 or r + 1 == dp.rounds):
            progress(
                f"    round {r + 1}/{dp.rounds}: cohort {cohort.size}, "
                f"clipped {result.clipped_fraction[-1]:.0%}"
                + (f", C {result.clip_norms[-1]:.3g}" if result.clip_norms else "")
                + f" ({time.perf_counter() - start:.0f} s)"
            )
    result.item_tensors = tensors
    # every participant fits its own factor to the final model (items frozen, local only)
    factors = np.zeros((train.num_users, config.dim), dtype=np.float32)
    for user, local in enumerate(views):
        trainer = trainer_of(user) if len(local) else None
        if trainer is None:
            continue
        if refit_epochs > 0:
            trainer.train_round(tensors, local, epochs=refit_epochs, update_items=False)
        factors[user] = trainer.user_factors[0]
        trainers.pop(user, None)  # keep memory flat: one factor is all that is left
    result.user_factors = factors
    result.seconds = time.perf_counter() - start
    return result
