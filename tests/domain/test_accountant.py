"""The privacy accountants: the PLD regression point, the RDP bound, fixed-size sampling."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from dp_accounting import dp_event, privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from coordinator.domain.accountant import fixed_size_epsilon, pld_epsilon, rdp_epsilon

DELTA = 1e-5


class TestPld:
    def test_regression_point(self) -> None:
        # q = 0.04, z = 1.5, T = 2250 at delta 1e-5 (a DP-SGD setting, 90 epochs at
        # batch 0.04): prv-accountant gives 6.77 +- 0.1 here too (the grid test)
        assert pld_epsilon(1.5, 0.04, 2250, DELTA) == pytest.approx(6.77, abs=0.02)

    def test_amplification_by_sampling(self) -> None:
        rates = (1.0, 0.5, 0.1, 0.01)
        epsilons = [pld_epsilon(1.0, q, 100, DELTA) for q in rates]
        assert epsilons == sorted(epsilons, reverse=True)
        assert len(set(epsilons)) == len(epsilons)
        assert epsilons[-1] < epsilons[0] / 10  # sampling pays for itself

    def test_grows_with_steps_and_shrinks_with_noise(self) -> None:
        by_steps = [pld_epsilon(1.0, 0.1, t, DELTA) for t in (1, 10, 100)]
        assert by_steps == sorted(by_steps)
        assert len(set(by_steps)) == 3
        by_noise = [pld_epsilon(z, 0.1, 100, DELTA) for z in (0.8, 1.0, 2.0)]
        assert by_noise == sorted(by_noise, reverse=True)
        assert len(set(by_noise)) == 3

    @pytest.mark.parametrize("accountant", [pld_epsilon, rdp_epsilon])
    def test_trivial_cases(self, accountant: Callable[[float, float, int, float], float]) -> None:
        assert accountant(1.0, 0.1, 0, DELTA) == 0.0
        assert accountant(1.0, 0.0, 10, DELTA) == 0.0
        assert accountant(0.0, 0.1, 10, DELTA) == math.inf

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ((1.0, 1.5, 10, DELTA), "sampling_rate"),
            ((1.0, -0.1, 10, DELTA), "sampling_rate"),
            ((1.0, 0.1, 10, 0.0), "delta"),
            ((1.0, 0.1, 10, 1.0), "delta"),
            ((1.0, 0.1, -1, DELTA), "steps"),
            ((-1.0, 0.1, 10, DELTA), "noise_multiplier"),
            ((math.nan, 0.1, 10, DELTA), "noise_multiplier"),
        ],
    )
    def test_invalid_arguments(self, args: tuple, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            pld_epsilon(*args)
        with pytest.raises(ValueError, match=message):
            rdp_epsilon(*args)


class TestRdp:
    def test_is_dp_accountings_poisson_gaussian(self) -> None:
        direct = rdp_privacy_accountant.RdpAccountant()
        direct.compose(dp_event.PoissonSampledDpEvent(0.04, dp_event.GaussianDpEvent(1.5)), 2250)
        assert rdp_epsilon(1.5, 0.04, 2250, DELTA) == pytest.approx(direct.get_epsilon(DELTA))

    def test_full_participation_is_the_plain_gaussian(self) -> None:
        direct = rdp_privacy_accountant.RdpAccountant()
        direct.compose(dp_event.GaussianDpEvent(1.0), 40)
        assert rdp_epsilon(1.0, 1.0, 40, DELTA) == pytest.approx(direct.get_epsilon(DELTA))

    def test_regression_point_is_above_pld(self) -> None:
        assert rdp_epsilon(1.5, 0.04, 2250, DELTA) > pld_epsilon(1.5, 0.04, 2250, DELTA) + 0.1


class TestFixedSize:
    def test_is_replace_one_sampling_without_replacement_at_half_the_noise(self) -> None:
        direct = rdp_privacy_accountant.RdpAccountant(
            neighboring_relation=privacy_accountant.NeighboringRelation.REPLACE_ONE
        )
        direct.compose(
            dp_event.SampledWithoutReplacementDpEvent(1000, 40, dp_event.GaussianDpEvent(0.75)),
            2250,
        )
        assert fixed_size_epsilon(1.5, 1000, 40, 2250, DELTA) == pytest.approx(
            direct.get_epsilon(DELTA)
        )

    def test_costs_more_than_poisson_at_the_same_rate(self) -> None:
        # replace-one moves the sum by 2C where add/remove moves it by C
        assert fixed_size_epsilon(1.5, 1000, 40, 100, DELTA) > rdp_epsilon(1.5, 0.04, 100, DELTA)

    def test_full_cohort_is_the_replace_one_gaussian(self) -> None:
        assert fixed_size_epsilon(2.0, 10, 10, 5, DELTA) == pytest.approx(
            rdp_epsilon(1.0, 1.0, 5, DELTA)
        )
        assert fixed_size_epsilon(2.0, 10, 0, 5, DELTA) == 0.0

    def test_sample_larger_than_population_is_refused(self) -> None:
        with pytest.raises(ValueError, match="sample_size"):
            fixed_size_epsilon(1.0, 10, 11, 5, DELTA)
