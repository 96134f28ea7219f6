"""Privacy accounting for DP-FedAvg rounds: the epsilon that ``steps`` rounds spend.

Each round is a Gaussian mechanism of noise multiplier ``z`` (noise std ``z * C`` on the
sum of updates clipped to L2 norm ``C``), applied to a sampled cohort of participants.
Both accountants come from Google's ``dp-accounting``:

- :func:`pld_epsilon`, the **reported** epsilon: privacy loss distributions (Koskela et
  al. 2020, Doroshenko et al. 2022) compose the Poisson-subsampled Gaussian almost
  exactly. The PLD is discretized pessimistically, so the result is an upper bound.
- :func:`rdp_epsilon`, the Renyi-DP bound (Mironov 2017, Mironov et al. 2019): looser
  but cheap; the tests check that PLD never exceeds it.

Both use **add/remove-one adjacency** (neighbouring federations differ by one
participant's presence) and **Poisson sampling** at rate ``q``: each participant joins
each round independently with probability ``q``, so one participant changes a round's sum
by at most ``C``. ``q = 1`` is full participation (no amplification).

**Fixed-size sampling** (exactly ``m`` of ``n`` participants per round, without
replacement) is not a Poisson sample, and no add/remove analysis of it is in
``dp-accounting``: the PLD accountant refuses it. :func:`fixed_size_epsilon` accounts it
honestly with the bound that exists, RDP for sampling without replacement under
**replace-one adjacency** (Wang, Balle, Kasiviswanathan, AISTATS 2019, Theorem 27),
where ``n`` is public and replacing one participant's update moves the sum by up to
``2 C``, so the effective noise multiplier is ``z / 2``. That epsilon is for a different
(replace-one) neighbouring relation and is larger than the Poisson one at the same rate.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # dp_accounting pulls in scipy (~2 s): imported only when accounting
    from dp_accounting import dp_event as dp_event_module

__all__ = ["fixed_size_epsilon", "pld_epsilon", "rdp_epsilon"]

# The PLD grid's spacing of privacy-loss values. 1e-4 gives epsilon to ~1e-3 at the
# regression point (q 0.04, z 1.5, T 2250) in ~0.3 s; coarser is faster but looser.
_PLD_DISCRETIZATION = 1e-4


def _check(noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> None:
    if not 0.0 <= sampling_rate <= 1.0:
        raise ValueError(f"sampling_rate must be in [0, 1], got {sampling_rate!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps!r}")
    if math.isnan(noise_multiplier) or noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")


def _trivial(noise_multiplier: float, sampling_rate: float, steps: int) -> float | None:
    """The epsilon that needs no accountant: 0 with nothing released or nobody sampled,
    infinite without noise."""
    if steps == 0 or sampling_rate == 0.0:
        return 0.0
    if noise_multiplier == 0.0:
        return math.inf
    return None


def _round_event(noise_multiplier: float, sampling_rate: float) -> dp_event_module.DpEvent:
    from dp_accounting import dp_event

    gaussian = dp_event.GaussianDpEvent(noise_multiplier)
    if sampling_rate >= 1.0:
        return gaussian
    return dp_event.PoissonSampledDpEvent(sampling_rate, gaussian)


@lru_cache(maxsize=1024)
def pld_epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian rounds by the PLD accountant.

    Add/remove-one adjacency, pessimistic discretization (an upper bound). 0 when nothing
    was released or nobody is ever sampled; infinite without noise.
    """
    _check(noise_multiplier, sampling_rate, steps, delta)
    if (trivial := _trivial(noise_multiplier, sampling_rate, steps)) is not None:
        return trivial
    if sampling_rate >= 1.0:
        return _gaussian_epsilon(noise_multiplier / math.sqrt(steps), delta)
    from dp_accounting.pld import pld_privacy_accountant

    accountant = pld_privacy_accountant.PLDAccountant(
        value_discretization_interval=_PLD_DISCRETIZATION
    )
    accountant.compose(_round_event(noise_multiplier, sampling_rate), steps)
    return float(accountant.get_epsilon(delta))


def _gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
    """The exact epsilon of one Gaussian mechanism (the PLD of dp-accounting's
    ``GaussianPrivacyLoss``, inverted in delta). T unsampled Gaussian rounds compose
    exactly into one of multiplier z / sqrt(T); a discretized PLD of them takes a minute
    at large epsilon (its grid spans [0, epsilon] in steps of 1e-4)."""
    from dp_accounting.pld import privacy_loss_mechanism
    from scipy.optimize import brentq

    loss = privacy_loss_mechanism.GaussianPrivacyLoss(
        standard_deviation=noise_multiplier, sensitivity=1.0
    )

    def excess(epsilon: float) -> float:
        return float(loss.get_delta_for_epsilon(epsilon)) - delta

    if excess(0.0) <= 0:
        return 0.0
    high = 1.0
    while excess(high) > 0:
        high *= 2
    tolerance = 1e-9
    # the root is bracketed to within the tolerance: report its upper end (an upper bound)
    return float(brentq(excess, 0.0, high, xtol=tolerance)) + tolerance


@lru_cache(maxsize=4096)
def rdp_epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian rounds by the RDP accountant.

    Add/remove-one adjacency; a looser bound than :func:`pld_epsilon`. 0 when nothing
    was released or nobody is ever sampled; infinite without noise.
    """
    _check(noise_multiplier, sampling_rate, steps, delta)
    if (trivial := _trivial(noise_multiplier, sampling_rate, steps)) is not None:
        return trivial
    from dp_accounting.rdp import rdp_privacy_accountant

    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(_round_event(noise_multiplier, sampling_rate), steps)
    return float(accountant.get_epsilon(delta))


@lru_cache(maxsize=1024)
def fixed_size_epsilon(
    noise_multiplier: float, population: int, sample_size: int, steps: int, delta: float
) -> float:
    """Epsilon of ``steps`` rounds that each sample exactly ``sample_size`` of
    ``population`` participants without replacement (RDP, replace-one adjacency).

    Replacing one participant moves the clipped sum by up to ``2 C``, so the Gaussian's
    multiplier relative to that sensitivity is ``z / 2``. A full cohort
    (``sample_size == population``) is the plain Gaussian under replace-one.
    """
    if population < 1 or not 0 <= sample_size <= population:
        raise ValueError(
            f"need 0 <= sample_size <= population and population >= 1, "
            f"got {sample_size!r} of {population!r}"
        )
    rate = sample_size / population
    _check(noise_multiplier, rate, steps, delta)
    if (trivial := _trivial(noise_multiplier, rate, steps)) is not None:
        return trivial
    from dp_accounting import dp_event, privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    gaussian = dp_event.GaussianDpEvent(noise_multiplier / 2.0)
    event: dp_event.DpEvent = (
        gaussian
        if sample_size == population
        else dp_event.SampledWithoutReplacementDpEvent(population, sample_size, gaussian)
    )
    accountant = rdp_privacy_accountant.RdpAccountant(
        neighboring_relation=privacy_accountant.NeighboringRelation.REPLACE_ONE
    )
    accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))
