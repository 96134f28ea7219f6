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
    "epsilon_spent",
    "privacy_spent",
    "round_allowed",
]


def clip_factor(update: Update, clip_norm: float) -> float:
    """``min(1, C / ||update||)``: the scale that bounds the update's norm by ``C``."""
    norm = update.norm()  # the same norm the wire codec bounds with max_update_norm
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
        cls, policy: DifferentialPrivacy, *, denominator: float | None = None
    ) -> DPAggregation:
        """One aggregation's DP, with a seed drawn from the OS CSPRNG."""
        return cls(
            clip_norm=policy.clip_norm,
            noise_multiplier=policy.noise_multiplier,
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

    def as_record(self) -> dict[str, object]:
        """What a version's record and signed manifest hold."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rounds": self.rounds,
            "accountant": self.accountant,
            "sampling_rate": self.sampling_rate,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PrivacySpent:
        return cls(
            epsilon=record.get("epsilon"),
            delta=float(record["delta"]),
            rounds=int(record["rounds"]),
            accountant=str(record.get("accountant", "rdp")),
            sampling_rate=float(record.get("sampling_rate", 1.0)),
        )


def privacy_spent(privacy: PrivacyPolicy, rounds: int) -> PrivacySpent | None:
    """The (epsilon, delta) spent by ``rounds`` unsampled rounds; None without DP."""
    if privacy.dp is None:
        return None
    return Accounting(privacy.dp).spent(rounds)
