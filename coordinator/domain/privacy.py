"""Participant-level differential privacy for FedAvg (DP-FedAvg, server-side fixed clipping).

As in McMahan et al., "Learning Differentially Private Recurrent Language Models"
(ICLR 2018) and Flower's ``DifferentialPrivacyServerSideFixedClipping``: the coordinator
scales each update to a global L2 norm of at most ``C``, adds Gaussian noise of std
``z * C`` to every coordinate of the round's sum, and divides by the number of updates
(a sampled round: by the expected cohort m, fixed whatever arrives). One participant
changes that sum by at most ``C``, so each round is a Gaussian mechanism with noise
multiplier ``z``, subsampled at rate q under ``rounds.sampling``;
:mod:`coordinator.domain.accountant` composes the rounds into the epsilon spent at the
policy's delta (PLD, with amplification by sampling), computed once per version and stored
with it. This is central DP: the coordinator sees the clear updates and is trusted.

The noise comes from a CSPRNG: each aggregation draws a fresh 256-bit seed from the
operating system (``secrets``) for its generator, holds it in memory only, and drops it
with the aggregation. Nothing stored (no key, no row, no blob) lets anyone regenerate a
past round's noise and subtract it from the published model. The price is that a round
aggregated twice (a crashed aggregator taken over by another process) gets different
noise: exactly-once still holds because only the first committed result is recorded
(the lease compare-and-set), and the loser's blob is removed (see the aggregation job).

Adaptive clipping (Andrew et al. 2021, ``privacy.dp.adaptive_clipping``): each round the
coordinator also counts the updates whose norm was at most the round's ``C``, adds
Gaussian noise of std ``sigma_b`` to that count, and moves ``C`` geometrically towards the
target quantile (:func:`next_clip_norm`). The count is a second Gaussian query on the
same participants, so the updates' sum gets the smaller multiplier ``z_delta``
(:func:`update_noise_multiplier`) and the two together cost exactly what one mechanism of
multiplier ``z`` does (the paper's Theorem 1): the accountant keeps reporting epsilon for
``z``. The ``C`` a round used and the one it hands on are recorded, signed, with the
version (its ``privacy_spent``): the next round reads them from its base version, so ``C``
survives restarts, and a retried aggregation re-reads the same starting ``C``.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from coordinator.domain.accountant import fixed_size_epsilon, pld_epsilon, rdp_epsilon
from coordinator.domain.errors import ValidationFailed
from coordinator.domain.specs import (
    AdaptiveClipping,
    DifferentialPrivacy,
    PrivacyPolicy,
    RoundPolicy,
    SamplingPolicy,
    StrategySpec,
)
from coordinator.store.models import Federation
from coordinator.store.repository import ParticipantRepository, RoundRepository
from participant_sdk.wire import Update

__all__ = [
    "Accounting",
    "DPAggregation",
    "accounting_of",
    "PrivacySpent",
    "check_dp_policy",
    "clip_factor",
    "clip_norm_of",
    "clip_scale",
    "count_stddev",
    "draw_count_noise",
    "next_clip_norm",
    "update_noise_multiplier",
    "epsilon_spent",
    "privacy_spent",
    "round_allowed",
]


def clip_factor(update: Update, clip_norm: float) -> float:
    """``min(1, C / ||update||)``: the scale that bounds the update's norm by ``C``."""
    # the same norm the wire codec bounds with max_update_norm; 1 without computing it
    # when the update's peak proves it within C
    if update.norm_surely_within(clip_norm):
        return 1.0
    return clip_scale(update.norm(), clip_norm)


def clip_scale(norm: float, clip_norm: float) -> float:
    """``min(1, C / norm)`` for a norm already computed (an aggregator that also counts
    the unclipped updates computes each norm once)."""
    return 1.0 if norm <= clip_norm else clip_norm / norm


@dataclass(frozen=True)
class DPAggregation:
    """What an accumulator needs to aggregate one round under DP."""

    clip_norm: float
    noise_multiplier: float
    # in memory only, for the one aggregation that drew it; never stored or logged
    seed: bytes = field(repr=False)
    # m, what the noised sum is divided by; None = the number of updates received.
    # Sampled rounds divide by the expected cohort (q N, or the fixed size): the count
    # received depends on who is in the data, a fixed m does not (McMahan et al. 2018)
    denominator: float | None = None

    @classmethod
    def fresh(
        cls,
        policy: DifferentialPrivacy,
        *,
        denominator: float | None = None,
        clip_norm: float | None = None,
        noise_multiplier: float | None = None,
    ) -> DPAggregation:
        """One aggregation's DP, with a seed drawn from the OS CSPRNG. ``clip_norm`` and
        ``noise_multiplier`` override the policy's (adaptive clipping: this round's C and
        z_delta)."""
        return cls(
            clip_norm=policy.clip_norm if clip_norm is None else clip_norm,
            noise_multiplier=(
                policy.noise_multiplier if noise_multiplier is None else noise_multiplier
            ),
            seed=secrets.token_bytes(32),
            denominator=denominator,
        )

    @property
    def noise_std(self) -> float:
        """Std of the noise added to each coordinate of the sum of clipped updates."""
        return self.noise_multiplier * self.clip_norm

    def clip_factor(self, update: Update) -> float:
        return clip_factor(update, self.clip_norm)

    def generator(self) -> np.random.Generator:
        """A fresh generator on this aggregation's seed: the same draws on every call, so
        the back-off's repeated steps within one aggregation add the same noise."""
        entropy = int.from_bytes(self.seed, "big")
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def update_noise_multiplier(noise_multiplier: float, count_std: float) -> float:
    """z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2): the multiplier left for the updates' sum
    when the unclipped count (sensitivity 1/2 once centred, so multiplier 2 sigma_b) takes
    its share, so that the pair composes to one Gaussian mechanism of multiplier z
    (Andrew et al. 2021, Theorem 1). 0 stays 0 (no privacy either way); raises
    ValueError when 2 sigma_b <= z, where no noise would be left for the updates."""
    if noise_multiplier == 0:
        return 0.0
    if 2 * count_std <= noise_multiplier:
        raise ValueError(
            f"clipped_count_stddev {count_std:g} must exceed noise_multiplier / 2 "
            f"= {noise_multiplier / 2:g}"
        )
    return float((noise_multiplier**-2 - (2 * count_std) ** -2) ** -0.5)


def count_stddev(policy: DifferentialPrivacy, cohort: float) -> float:
    """sigma_b for a round of expected cohort m: the policy's, or m / 20 (the paper's
    default), raised to at least z so that z_delta stays within 2 / sqrt(3) of z."""
    assert policy.adaptive_clipping is not None
    if policy.adaptive_clipping.clipped_count_stddev is not None:
        return policy.adaptive_clipping.clipped_count_stddev
    return max(cohort / 20.0, policy.noise_multiplier, 1e-12)


def next_clip_norm(
    clip_norm: float,
    unclipped: int,
    cohort: float,
    count_noise: float,
    policy: AdaptiveClipping,
) -> tuple[float, float]:
    """The geometric update C <- C exp(-eta_C (b - gamma)), with b = (sum_i 1[norm_i <= C]
    + noise) / m the noised fraction of unclipped updates. Returns (next C, b).

    ``count_noise`` is the Gaussian draw of std sigma_b; the caller draws it (the
    aggregation from the CSPRNG; tests pass it in)."""
    fraction = (unclipped + count_noise) / max(cohort, 1.0)
    updated = clip_norm * math.exp(-policy.learning_rate * (fraction - policy.target_quantile))
    # the paper's update has no bounds; these only keep C a positive finite float
    return float(min(max(updated, 1e-12), 1e12)), float(fraction)


def draw_count_noise(std: float) -> float:
    """One Gaussian draw of std sigma_b for the unclipped count, from the OS CSPRNG (like
    the updates' noise, nothing stored lets anyone subtract it again)."""
    return secrets.SystemRandom().gauss(0.0, std)


def clip_norm_of(policy: DifferentialPrivacy, base_record: Mapping[str, Any] | None) -> float:
    """The C a round clips to: the one its base version handed on (adaptive clipping),
    else the policy's ``clip_norm`` (fixed clipping, or the first adaptive round)."""
    if policy.adaptive_clipping is not None and base_record:
        handed_on = base_record.get("next_clip_norm")
        if isinstance(handed_on, int | float) and math.isfinite(handed_on) and handed_on > 0:
            return float(handed_on)
    return policy.clip_norm


def check_dp_policy(
    strategy: StrategySpec, privacy: PrivacyPolicy, sampling: SamplingPolicy | None = None
) -> None:
    """Refuse a DP policy that cannot hold: a strategy whose sensitivity depends on the
    data, or a ``max_epsilon`` that not even one round fits in (at the sampling rate;
    fixed-size sampling's rate depends on how many enrol, so it is checked at rate 1
    only when it must be: its rounds are checked before each opens).

    Every server optimizer is allowed: FedAvgM, FedAdam and FedYogi only post-process
    the noised mean (their moments are functions of past noised means), which costs no
    privacy (the post-processing property of DP). That holds because under DP the
    aggregator marks every row touched, so an optimizer's row mask reveals nothing.
    """
    if privacy.dp is None:
        return
    wrong = [
        f'strategy.{name} = "{want}" (got "{got}")'
        for name, want, got in (
            ("weighting", "uniform", strategy.weighting),
            ("normalization", "total", strategy.normalization),
        )
        if got != want
    ]
    if wrong:
        raise ValidationFailed(
            "privacy.dp needs "
            + " and ".join(wrong)
            + ": example weights and per-row denominators make one participant's influence "
            "depend on the data, so the noise would not bound it",
            field="strategy",
        )
    if sampling is not None and sampling.kind == "fixed":
        return
    epsilon = Accounting(privacy.dp, sampling).epsilon(1)
    if privacy.dp.max_epsilon is not None and epsilon > privacy.dp.max_epsilon:
        raise ValidationFailed(
            f"privacy.dp.max_epsilon {privacy.dp.max_epsilon:g} is below the epsilon of a "
            f"single round ({epsilon:.4g} at delta {privacy.dp.delta:g}): raise max_epsilon "
            "or noise_multiplier",
            field="privacy.dp.max_epsilon",
            single_round_epsilon=epsilon,
        )


def epsilon_spent(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon after ``rounds`` Gaussian mechanisms of noise multiplier ``z`` (RDP).

    Every participant takes part in every round (sampling rate 1), so each round is a
    plain Gaussian mechanism. 0 before the first round; infinite without noise. The
    coordinator reports :meth:`Accounting.epsilon` (PLD) instead; this RDP bound stays for
    the in-process simulation's reports.
    """
    return rdp_epsilon(noise_multiplier, 1.0, max(rounds, 0), delta)


@dataclass(frozen=True)
class Accounting:
    """What a federation's epsilon depends on, and the accountant that reports it.

    Unsampled and Poisson rounds: PLD, add/remove-one adjacency, at the sampling rate q
    (1 unsampled). Fixed-size rounds: RDP of sampling without replacement under
    replace-one adjacency (see :mod:`coordinator.domain.accountant`), at the largest
    rate any round drew at: ``population`` is the smallest population drawn from so far
    (None before any draw: rate 1, the bound that holds whatever enrols).
    """

    dp: DifferentialPrivacy
    sampling: SamplingPolicy | None = None
    population: int | None = None

    @property
    def fixed_size(self) -> bool:
        return self.sampling is not None and self.sampling.kind == "fixed"

    @property
    def accountant(self) -> str:
        return "rdp-replace-one" if self.fixed_size else "pld"

    @property
    def sampling_rate(self) -> float:
        if self.sampling is None:
            return 1.0
        if self.sampling.kind == "poisson":
            assert self.sampling.rate is not None
            return self.sampling.rate
        assert self.sampling.size is not None
        if not self.population:
            return 1.0
        return min(self.sampling.size, self.population) / self.population

    def epsilon(self, rounds: int) -> float:
        """Epsilon after ``rounds`` aggregated rounds (0 before the first, inf without noise)."""
        z, delta, rounds = self.dp.noise_multiplier, self.dp.delta, max(rounds, 0)
        if self.fixed_size:
            assert self.sampling is not None
            assert self.sampling.size is not None
            population = self.population or 1
            drawn = min(self.sampling.size, population) if self.population else 1
            return fixed_size_epsilon(z, population, drawn, rounds, delta)
        return pld_epsilon(z, self.sampling_rate, rounds, delta)

    def spent(self, rounds: int) -> PrivacySpent:
        epsilon = self.epsilon(rounds)
        return PrivacySpent(
            epsilon=epsilon if math.isfinite(epsilon) else None,
            delta=self.dp.delta,
            rounds=rounds,
            accountant=self.accountant,
            sampling_rate=self.sampling_rate,
        )

    def round_allowed(self, completed_rounds: int) -> bool:
        """False once one more round would spend more than the policy's ``max_epsilon``."""
        if self.dp.max_epsilon is None:
            return True
        return self.epsilon(completed_rounds + 1) <= self.dp.max_epsilon


def accounting_of(session: Session, federation: Federation) -> Accounting | None:
    """The federation's accounting as of now; None without DP. Fixed-size sampling
    reads the smallest population its rounds drew from, and the active participants
    (the population the next round would draw from)."""
    dp = PrivacyPolicy.model_validate(federation.privacy).dp
    if dp is None:
        return None
    sampling = RoundPolicy.model_validate(federation.round_policy).sampling
    if sampling is None or sampling.kind != "fixed":
        return Accounting(dp, sampling)
    drawn = RoundRepository(session).smallest_population(federation.id)
    active = ParticipantRepository(session).count_active(federation.id)
    candidates = [n for n in (drawn, active) if n]
    return Accounting(dp, sampling, min(candidates) if candidates else None)


def round_allowed(policy: DifferentialPrivacy, completed_rounds: int) -> bool:
    """Unsampled rounds: False once one more would spend more than ``max_epsilon``."""
    return Accounting(policy).round_allowed(completed_rounds)


@dataclass(frozen=True)
class PrivacySpent:
    """Privacy spent so far; ``epsilon`` is None when unbounded (no noise)."""

    epsilon: float | None
    delta: float
    rounds: int
    accountant: str = "pld"
    sampling_rate: float = 1.0
    # adaptive clipping only: the C this version's round clipped to, the C it hands on
    clip_norm: float | None = None
    next_clip_norm: float | None = None

    def as_record(self) -> dict[str, object]:
        """What a version's record and signed manifest hold."""
        record: dict[str, object] = {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rounds": self.rounds,
            "accountant": self.accountant,
            "sampling_rate": self.sampling_rate,
        }
        if self.next_clip_norm is not None:  # only then: other records keep their bytes
            record["clip_norm"] = self.clip_norm
            record["next_clip_norm"] = self.next_clip_norm
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PrivacySpent:
        return cls(
            epsilon=record.get("epsilon"),
            delta=float(record["delta"]),
            rounds=int(record["rounds"]),
            accountant=str(record.get("accountant", "rdp")),
            sampling_rate=float(record.get("sampling_rate", 1.0)),
            clip_norm=_optional_float(record.get("clip_norm")),
            next_clip_norm=_optional_float(record.get("next_clip_norm")),
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def privacy_spent(privacy: PrivacyPolicy, rounds: int) -> PrivacySpent | None:
    """The (epsilon, delta) spent by ``rounds`` unsampled rounds; None without DP."""
    if privacy.dp is None:
        return None
    return Accounting(privacy.dp).spent(rounds)
