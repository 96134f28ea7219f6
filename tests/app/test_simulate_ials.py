"""``fedrec simulate --model ials``: the options it builds and a whole small run."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from fedrec.cli import _simulation_options, build_parser
from fedrec.options import IALS_SERVER_LR, SimulationOptions, default_of
from fedrec.simulation import run_simulation
from participant_sdk.recsys import BPRConfig, IALSConfig


def _options(*argv: str) -> SimulationOptions:
    options = _simulation_options(build_parser().parse_args(["simulate", *argv]), demo=False)
    assert isinstance(options, SimulationOptions)
    return options


def test_model_flag_picks_the_trainer_and_its_server_step() -> None:
    options = _options("--model", "ials", "--alpha", "3", "--dim", "16", "--reg", "0.05")
    assert options.trainer_config() == IALSConfig(dim=16, reg=0.05, alpha=3.0)
    assert options.server_lr == IALS_SERVER_LR
    assert _options("--model", "ials", "--server-lr", "1.5").server_lr == 1.5
    default = _options()
    assert default.model == "bpr"
    assert isinstance(default.trainer_config(), BPRConfig)
    assert default.server_lr == default_of("server_lr")


@pytest.mark.slow
def test_simulate_ials_end_to_end(tmp_path: Path) -> None:
    options = SimulationOptions(
        dataset="synthetic",
        recipe="fixed",
        model="ials",
        participants=2,
        rounds=2,
        dim=8,
        server_lr=IALS_SERVER_LR,
        data_dir=tmp_path / "coordinator",
    )
    with open(tmp_path / "out.txt", "w") as handle:
        report = run_simulation(options, Console(file=handle, width=120))
    assert [entry["updates"] for entry in report["history"]] == [2, 2]
    for model in ("federated", "centralized"):
        assert 0.0 <= report["final"][model]["test"]["ndcg@10"] <= 1.0
    assert report["final"]["federated"]["test"]["deployed_version"] >= 1
    assert "implicit ALS" in (tmp_path / "out.txt").read_text()
