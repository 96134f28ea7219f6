"""Adaptive clipping (Andrew et al. 2021) at unit level: the geometric update by hand, the
noise split z_delta, the default sigma_b, C converging to the target quantile of a fixed
norm distribution, and the policy's validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from coordinator.domain.privacy import (
    Accounting,
    clip_norm_of,
    count_stddev,
    next_clip_norm,
    update_noise_multiplier,
)
from coordinator.domain.specs import AdaptiveClipping, DifferentialPrivacy, PrivacyPolicy


class TestGeometricUpdate:
    def test_hand_computed_steps_without_count_noise(self) -> None:
        policy = AdaptiveClipping(target_quantile=0.5, learning_rate=0.2)
        # 3 of 4 unclipped: b = 0.75 > 0.5, C shrinks by exp(-0.2 * 0.25)
        clip, fraction = next_clip_norm(1.0, 3, 4, 0.0, policy)
        assert fraction == 0.75
        assert clip == pytest.approx(math.exp(-0.05))
        # none unclipped: b = 0, C grows by exp(0.2 * 0.5)
        clip, fraction = next_clip_norm(2.0, 0, 4, 0.0, policy)
        assert fraction == 0.0
        assert clip == pytest.approx(2.0 * math.exp(0.1))
        # exactly at the target: C stays
        assert next_clip_norm(0.7, 2, 4, 0.0, policy)[0] == pytest.approx(0.7)

    def test_the_count_noise_enters_the_fraction(self) -> None:
        policy = AdaptiveClipping(target_quantile=0.9, learning_rate=0.5)
        clip, fraction = next_clip_norm(1.0, 5, 10, 1.5, policy)
        assert fraction == pytest.approx(0.65)
        assert clip == pytest.approx(math.exp(-0.5 * (0.65 - 0.9)))

    def test_a_seeded_generator_reproduces_the_trajectory(self) -> None:
        # production draws from the CSPRNG; with a seeded generator the path is a function
        # of the counts and the draws alone (what makes C durable once recorded)
        policy = AdaptiveClipping()

        def trajectory(seed: int) -> list[float]:
            rng = np.random.default_rng(seed)
            clip, path = 1.0, []
            for unclipped in (0, 3, 5, 10, 2):
                clip = next_clip_norm(clip, unclipped, 10, rng.normal(0, 0.5), policy)[0]
                path.append(clip)
            return path

        assert trajectory(1) == trajectory(1)
        assert trajectory(1) != trajectory(2)


class TestNoiseSplit:
    def test_z_delta_formula(self) -> None:
        # (1 - 1/4)^(-1/2) for z = 1, sigma_b = 1
        assert update_noise_multiplier(1.0, 1.0) == pytest.approx(1 / math.sqrt(0.75))
        assert update_noise_multiplier(2.0, 5.0) == pytest.approx((0.25 - 0.01) ** -0.5)

    @pytest.mark.parametrize(("z", "sigma_b"), [(1.0, 0.8), (0.5, 3.0), (4.0, 2.5)])
    def test_the_two_queries_compose_to_z(self, z: float, sigma_b: float) -> None:
        z_delta = update_noise_multiplier(z, sigma_b)
        assert z_delta > z
        # Gaussian mechanisms compose like one whose 1/z^2 is the sum of theirs
        assert z_delta**-2 + (2 * sigma_b) ** -2 == pytest.approx(z**-2)

    @pytest.mark.parametrize("sigma_b", [0.5, 0.2])
    def test_too_small_a_count_std_is_refused(self, sigma_b: float) -> None:
        with pytest.raises(ValueError, match="must exceed noise_multiplier / 2"):
            update_noise_multiplier(1.0, sigma_b)

    def test_no_noise_stays_no_noise(self) -> None:
        assert update_noise_multiplier(0.0, 0.1) == 0.0

    def test_default_sigma_b_is_the_cohort_over_20_at_least_z(self) -> None:
        dp = DifferentialPrivacy(
            clip_norm=1, noise_multiplier=1.0, adaptive_clipping=AdaptiveClipping()
        )
        assert count_stddev(dp, 100) == pytest.approx(5.0)
        assert count_stddev(dp, 10) == pytest.approx(1.0)  # 0.5 raised to z
        explicit = DifferentialPrivacy(
            clip_norm=1,
            noise_multiplier=1.0,
            adaptive_clipping=AdaptiveClipping(clipped_count_stddev=0.75),
        )
        assert count_stddev(explicit, 100) == 0.75

    def test_the_accountant_reports_epsilon_for_z(self) -> None:
        fixed = DifferentialPrivacy(clip_norm=1, noise_multiplier=1.1)
        adaptive = fixed.model_copy(update={"adaptive_clipping": AdaptiveClipping()})
        assert Accounting(adaptive).epsilon(5) == Accounting(fixed).epsilon(5)


@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.9])
def test_clip_norm_converges_to_the_target_quantile(quantile: float) -> None:
    """A fixed population of update norms (log-normal): after enough rounds, C sits at
    the target quantile, and the fraction of unclipped updates at the target."""
    rng = np.random.default_rng(3)
    norms = rng.lognormal(mean=0.0, sigma=1.0, size=400)
    policy = AdaptiveClipping(target_quantile=quantile, learning_rate=0.2)
    sigma_b = len(norms) / 20
    clip, late = 10.0, []  # start far above every quantile
    for step in range(300):
        unclipped = int((norms <= clip).sum())
        clip = next_clip_norm(clip, unclipped, len(norms), rng.normal(0, sigma_b), policy)[0]
        if step >= 200:
            late.append(clip)
    settled = float(np.median(late))
    assert abs(float((norms <= settled).mean()) - quantile) < 0.05
    assert settled == pytest.approx(float(np.quantile(norms, quantile)), rel=0.2)


class TestRecordedClipNorm:
    def test_the_base_version_hands_c_on(self) -> None:
        dp = DifferentialPrivacy(
            clip_norm=1.5, noise_multiplier=1.0, adaptive_clipping=AdaptiveClipping()
        )
        assert clip_norm_of(dp, None) == 1.5  # version 0: the initial C
        assert clip_norm_of(dp, {"epsilon": 0.0, "delta": 1e-5, "rounds": 0}) == 1.5
        assert clip_norm_of(dp, {"clip_norm": 1.5, "next_clip_norm": 1.2}) == 1.2
        fixed = dp.model_copy(update={"adaptive_clipping": None})
        assert clip_norm_of(fixed, {"next_clip_norm": 1.2}) == 1.5


class TestPolicyValidation:
    def test_sigma_b_must_leave_noise_for_the_updates(self) -> None:
        with pytest.raises(ValidationError, match="clipped_count_stddev 0.5 must exceed"):
            DifferentialPrivacy(
                clip_norm=1,
                noise_multiplier=1.0,
                adaptive_clipping={"clipped_count_stddev": 0.5},
            )

    @pytest.mark.parametrize(
        "adaptive",
        [{"target_quantile": 1.5}, {"learning_rate": 0}, {"clipped_count_stddev": -1}],
    )
    def test_out_of_range_fields(self, adaptive: dict[str, float]) -> None:
        with pytest.raises(ValidationError):
            DifferentialPrivacy(clip_norm=1, noise_multiplier=1.0, adaptive_clipping=adaptive)

    def test_not_with_secure_aggregation(self) -> None:
        with pytest.raises(ValidationError, match="cannot run with privacy.secure_aggregation"):
            PrivacyPolicy.model_validate(
                {
                    "dp": {"clip_norm": 1, "noise_multiplier": 1, "adaptive_clipping": {}},
                    "secure_aggregation": {"threshold": 2},
                }
            )
