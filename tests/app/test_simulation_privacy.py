"""``fedrec simulate`` with differential privacy: the ``--dp-*`` flags and the reported epsilon."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from coordinator.domain.accountant import pld_epsilon
from fedrec.cli import _simulation_options, build_parser
from fedrec.simulation import SimulationOptions, run_simulation


class TestSimulate:
    """``fedrec simulate --dp-clip C --dp-noise Z`` sets the policy over the API."""

    def test_dp_flags_default_to_uniform_total(self) -> None:
        options = _simulation_options(
            build_parser().parse_args(["simulate", "--dp-clip", "0.5", "--dp-noise", "1"]),
            demo=False,
        )
        assert isinstance(options, SimulationOptions)
        assert (options.weighting, options.normalization) == ("uniform", "total")
        assert options.privacy() == {"dp": {"clip_norm": 0.5, "noise_multiplier": 1.0}}
        plain = _simulation_options(build_parser().parse_args(["simulate"]), demo=False)
        assert isinstance(plain, SimulationOptions)
        assert (plain.weighting, plain.normalization) == ("examples", "touched")
        assert plain.privacy() is None

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--dp-clip", "0.5", "--dp-noise", "1", "--weighting", "examples"], "--weighting"),
            (["--dp-clip", "0.5", "--dp-noise", "1", "--normalization", "touched"], "uniform"),
            (["--dp-clip", "0.5"], "go together"),
            (["--dp-noise", "1"], "go together"),
        ],
    )
    def test_dp_flags_refuse_what_the_coordinator_would(
        self, argv: list[str], message: str
    ) -> None:
        options = _simulation_options(build_parser().parse_args(["simulate", *argv]), demo=False)
        assert isinstance(options, SimulationOptions)
        with pytest.raises(SystemExit, match=message):
            options.privacy()

    @pytest.mark.slow
    def test_simulation_reports_epsilon(self, tmp_path: Path) -> None:
        options = SimulationOptions(
            dataset="synthetic",
            participants=3,
            rounds=2,
            dim=8,
            local_epochs=1,
            weighting="uniform",
            normalization="total",
            dp_clip=0.5,
            dp_noise=1.0,
            data_dir=tmp_path / "coordinator",
        )
        out = tmp_path / "out.txt"
        with out.open("w") as file:
            report = run_simulation(options, Console(file=file, width=200))
        spent = report["final"]["privacy_spent"]
        assert spent == {
            "epsilon": pytest.approx(pld_epsilon(1.0, 1.0, 2, 1e-5)),
            "delta": 1e-5,
            "rounds": 2,
            "accountant": "pld",
            "sampling_rate": 1.0,
            "clip_norm": None,
            "next_clip_norm": None,
        }
        assert f"epsilon {spent['epsilon']:.3g} at delta 1e-05 after 2 rounds" in out.read_text()
