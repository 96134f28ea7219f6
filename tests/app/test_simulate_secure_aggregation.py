"""``fedrec simulate --secure-aggregation``: the flag, what it excludes, one small run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from rich.console import Console
from sqlalchemy import create_engine, text

from fedrec.cli import _simulation_options, build_parser
from fedrec.options import SECAGG_CLIP
from fedrec.simulation import SimulationOptions, run_simulation


def options_of(*argv: str) -> SimulationOptions:
    options = _simulation_options(build_parser().parse_args(["simulate", *argv]), demo=False)
    assert isinstance(options, SimulationOptions)
    return options


def test_the_flag_sets_the_policy_and_the_uniform_total_strategy() -> None:
    options = options_of("--secure-aggregation")
    assert (options.weighting, options.normalization) == ("uniform", "total")
    # a majority of the partition's participants, known once the data is split
    assert options.privacy(participants=5) == {
        "secure_aggregation": {"threshold": 3, "clip_norm": SECAGG_CLIP, "max_participants": 5}
    }
    with_dp = options_of(
        "--secure-aggregation", "--dp-clip", "0.5", "--dp-noise", "1", "--secagg-threshold", "2"
    )
    assert with_dp.privacy(participants=4) == {
        "dp": {"clip_norm": 0.5, "noise_multiplier": 1.0},
        "secure_aggregation": {"threshold": 2, "clip_norm": 0.5, "max_participants": 4},
    }


def test_the_sparse_graph_flags() -> None:
    options = options_of("--secure-aggregation", "--secagg-graph", "harary", "--secagg-degree", "4")
    policy = options.privacy(participants=9)
    assert policy is not None
    assert policy["secure_aggregation"] == {
        "threshold": 5,
        "clip_norm": SECAGG_CLIP,
        "max_participants": 9,
        "graph": "harary",
        "degree": 4,
    }
    with pytest.raises(SystemExit, match="invalid secure-aggregation settings: .*even"):
        options_of(
            "--secure-aggregation", "--secagg-graph", "harary", "--secagg-degree", "3"
        ).privacy(participants=9)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "ease"], "--model ease"),
        (["--weighting", "examples"], "--weighting examples"),
        (["--normalization", "touched"], "--normalization touched"),
        (["--dp-clip", "1", "--dp-noise", "1", "--secagg-clip", "2"], "--secagg-clip"),
        (["--secagg-degree", "4"], "--secagg-graph harary"),
    ],
)
def test_the_flag_refuses_what_it_excludes(argv: list[str], message: str) -> None:
    options = options_of("--secure-aggregation", *argv)
    with pytest.raises(SystemExit, match=f"--secure-aggregation excludes .*{message}"):
        options.privacy(participants=5)


def test_one_participant_is_refused() -> None:
    with pytest.raises(SystemExit, match="at least 2 participants"):
        options_of("--secure-aggregation").privacy(participants=1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("participants", "graph", "degree"), [(3, "complete", None), (5, "harary", 2)]
)
def test_a_secure_simulation_sums_every_participant_in_every_round(
    tmp_path: Path, participants: int, graph: Literal["complete", "harary"], degree: int | None
) -> None:
    options = SimulationOptions(
        dataset="synthetic",
        recipe="fixed",
        participants=participants,
        secagg_graph=graph,
        secagg_degree=degree,
        rounds=2,
        patience=None,
        dim=8,
        local_epochs=1,
        weighting="uniform",
        normalization="total",
        secure_aggregation=True,
        workers=1,  # fewer than the participants: the run steps all of them anyway
        data_dir=tmp_path / "coordinator",
    )
    out = tmp_path / "out.txt"
    with out.open("w") as file:
        report = run_simulation(options, Console(file=file, width=200))
    assert [entry["updates"] for entry in report["history"]] == [participants] * 2
    assert [entry["state"] for entry in report["history"]] == ["closed", "closed"]
    assert report["final"]["federated"]["test"]["deployed_version"] >= 1
    line = f"secure aggregation: the coordinator sees only each round's sum of {participants}"
    assert line in " ".join(out.read_text().split())
    # the rounds ran the protocol to its end: the state rows say done, nothing left behind
    engine = create_engine(f"sqlite:///{tmp_path / 'coordinator' / 'fedrec.db'}")
    with engine.connect() as conn:
        phases = conn.execute(text("SELECT phase, state FROM secagg_states")).all()
        leftovers = conn.execute(text("SELECT count(*) FROM secagg_share_ciphertexts")).scalar()
        masked = conn.execute(text("SELECT count(*) FROM secagg_masked_inputs")).scalar()
        privacy = conn.execute(text("SELECT privacy FROM federations")).scalar_one()
    engine.dispose()
    assert [phase for phase, _ in phases] == ["done", "done"]
    assert (leftovers, masked) == (0, 0)
    stored = json.loads(privacy) if isinstance(privacy, str) else privacy
    assert stored["secure_aggregation"]["threshold"] == participants // 2 + 1
    rings = [json.loads(state)["ring"] for _, state in phases]
    if graph == "harary":  # drawn per round over everyone, recorded in the state row
        assert all(
            sorted(ring) == sorted(set(ring)) and len(ring) == participants for ring in rings
        )
    else:
        assert rings == [[], []]
