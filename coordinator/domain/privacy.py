"""Participant-level differential privacy for FedAvg (DP-FedAvg, server-side fixed clipping).

As in McMahan et al., "Learning Differentially Private Recurrent Language Models"
(ICLR 2018) and Flower's ``DifferentialPrivacyServerSideFixedClipping``: the coordinator
scales each update to a global L2 norm of at most ``C``, adds Gaussian noise of std
``z * C`` to every coordinate of the round's sum, and divides by the number of updates.
One participant changes that sum by at most ``C``, so each round is a Gaussian mechanism
with noise multiplier ``z``; the RDP accountant of Google's ``dp-accounting`` composes the
rounds into the epsilon spent at the policy's delta. This is central DP: the coordinator
sees the clear updates and is trusted.

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
from dataclasses import dataclass, field

import numpy as np

from coordinator.domain.accountant import rdp_epsilon
from coordinator.domain.errors import ValidationFailed
from coordinator.domain.specs import DifferentialPrivacy, PrivacyPolicy, StrategySpec
from participant_sdk.wire import Update

__all__ = [
    "DPAggregation",
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


def check_dp_policy(strategy: StrategySpec, privacy: PrivacyPolicy) -> None:
    """Refuse a DP policy that cannot hold: a strategy whose sensitivity depends on the
    data, or a ``max_epsilon`` that not even one round fits in.

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
    epsilon = epsilon_spent(privacy.dp.noise_multiplier, 1, privacy.dp.delta)
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
    plain Gaussian mechanism. 0 before the first round; infinite without noise.
    """
    return rdp_epsilon(noise_multiplier, 1.0, max(rounds, 0), delta)


def round_allowed(policy: DifferentialPrivacy, completed_rounds: int) -> bool:
    """False once one more round would spend more than the policy's ``max_epsilon``."""
    if policy.max_epsilon is None:
        return True
    epsilon = epsilon_spent(policy.noise_multiplier, completed_rounds + 1, policy.delta)
    return epsilon <= policy.max_epsilon


@dataclass(frozen=True)
class PrivacySpent:
    """Privacy spent so far; ``epsilon`` is None when unbounded (no noise)."""

    epsilon: float | None
    delta: float
    rounds: int


def privacy_spent(privacy: PrivacyPolicy, rounds: int) -> PrivacySpent | None:
    """The (epsilon, delta) spent by ``rounds`` aggregated rounds; None without DP."""
    if privacy.dp is None:
        return None
    epsilon = epsilon_spent(privacy.dp.noise_multiplier, rounds, privacy.dp.delta)
    return PrivacySpent(
        epsilon=epsilon if math.isfinite(epsilon) else None,
        delta=privacy.dp.delta,
        rounds=rounds,
    )
