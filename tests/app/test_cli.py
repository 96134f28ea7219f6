"""The ``fedrec`` command line: migrate, verify-lineage, gc, help, the simulation's options."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from fedrec.cli import OPTION_FIELDS, _simulation_options, build_parser, main
from fedrec.options import SimulationOptions, default_of


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("FEDREC_DATABASE_URL", raising=False)
    monkeypatch.setenv("FEDREC_SECRET_KEY", "cli-test")
    monkeypatch.setenv("FEDREC_ADMIN_TOKEN", "fra_cli-test-token")
    return tmp_path / "data"


def test_migrate_creates_the_schema(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--data-dir", str(data_dir)]) == 0
    assert "database at head" in capsys.readouterr().out
    engine = create_engine(f"sqlite:///{data_dir / 'fedrec.db'}")
    assert {"federations", "rounds", "updates", "model_versions"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_verify_lineage_of_unknown_federation(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["migrate", "--data-dir", str(data_dir)])
    assert main(["verify-lineage", "nope", "--data-dir", str(data_dir)]) == 2
    assert "no model versions" in capsys.readouterr().err


def test_gc_removes_an_old_orphan_blob(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coordinator.store.local_blobs import LocalBlobStore

    main(["migrate", "--data-dir", str(data_dir)])
    blobs = LocalBlobStore(data_dir / "blobs")
    digest = blobs.put(b"never committed")
    old = time.time() - 3 * 3600
    os.utime(blobs.path(digest), (old, old))

    assert main(["gc", "--data-dir", str(data_dir), "--grace-hours", "4"]) == 0
    assert "removed 0" in capsys.readouterr().out
    assert main(["gc", "--data-dir", str(data_dir), "--grace-hours", "2", "--dry-run"]) == 0
    assert "would remove 1" in capsys.readouterr().out
    assert blobs.exists(digest)
    assert main(["gc", "--data-dir", str(data_dir), "--grace-hours", "2"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert not blobs.exists(digest)


def test_gc_refuses_a_negative_grace(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["gc", "--data-dir", str(data_dir), "--grace-hours", "-1"])
    assert exit_info.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "migrate", "verify-lineage", "gc", "simulate", "demo"):
        assert command in out


def test_simulate_options_carry_the_training_recipe() -> None:
    args = build_parser().parse_args(
        ["simulate", "--recency-window", "5", "--recency-weight", "8", "--negatives", "2"]
    )
    options = _simulation_options(args, demo=False)
    assert isinstance(options, SimulationOptions)
    config = options.bpr_config()
    assert (config.recency_window, config.recency_weight, config.negatives) == (5, 8.0, 2)
    # recency weighting is on by default and can be switched off
    default = _simulation_options(build_parser().parse_args(["demo"]), demo=True)
    assert isinstance(default, SimulationOptions)
    assert default.bpr_config().recency_weighted
    off = build_parser().parse_args(["simulate", "--recency-window", "0"])
    off_options = _simulation_options(off, demo=False)
    assert isinstance(off_options, SimulationOptions)
    assert not off_options.bpr_config().recency_weighted


def _simulation_parser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices[command]
    return parser


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_simulation_defaults_live_in_simulation_options(command: str) -> None:
    """Every option's default is its SimulationOptions field's default (one place)."""
    fields = {f.name for f in dataclasses.fields(SimulationOptions)}
    checked, derived = set(), set()
    for action in _simulation_parser(command)._actions:
        name = OPTION_FIELDS.get(action.dest, action.dest)
        if name not in fields:
            continue
        if action.default is None and default_of(name) is not None:
            derived.add(name)  # no argparse default: chosen when the options are built
            continue
        assert action.default == default_of(name), name
        checked.add(name)
    # DP picks its own defaults; the server step's default depends on --model and the
    # optimizer; the pinnable options default to None so that setting one pins it
    pinnable = {
        "model",
        "server_optimizer",
        "local_epochs",
        "user_epochs",
        "recency_window",
        "validation_window",
    }
    assert derived == {"normalization", "weighting", "server_lr"} | pinnable
    assert {"participants", "rounds", "dim", "learning_rate", "recipe"} <= checked


def test_simulate_without_options_is_the_default_simulation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FEDREC_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("FEDREC_ML100K_DIR", raising=False)
    simulate = build_parser().parse_args(["simulate"])
    assert _simulation_options(simulate, demo=False) == SimulationOptions()
    demo = build_parser().parse_args(["demo"])
    assert _simulation_options(demo, demo=True) == SimulationOptions(
        dataset="ml-100k", fallback_to_synthetic=True
    )


def test_server_optimizer_flags_build_the_federations_strategy() -> None:
    args = build_parser().parse_args(
        [
            "simulate",
            "--server-optimizer",
            "fedadam",
            "--server-beta2",
            "0.9",
            "--proximal-mu",
            "0.01",
        ]
    )
    options = _simulation_options(args, demo=False)
    assert options.server_lr is None  # not FedAvg's 2.0: the coordinator's adaptive default
    assert options.strategy() == {
        "name": "fedadam",
        "normalization": "touched",
        "weighting": "examples",
        "beta2": 0.9,
        "proximal_mu": 0.01,
    }
    momentum = build_parser().parse_args(
        [
            "simulate",
            "--server-optimizer",
            "fedavgm",
            "--server-lr",
            "0.5",
            "--server-momentum",
            "0.8",
        ]
    )
    strategy = _simulation_options(momentum, demo=False).strategy()
    assert (strategy["server_lr"], strategy["server_momentum"]) == (0.5, 0.8)


def test_invalid_server_optimizer_settings_stop_before_anything_runs() -> None:
    args = build_parser().parse_args(
        ["simulate", "--server-optimizer", "fedyogi", "--server-beta2", "1.5"]
    )
    with pytest.raises(SystemExit, match="beta2"):
        _simulation_options(args, demo=False).strategy()


def test_dp_accepts_an_adaptive_server_optimizer() -> None:
    args = build_parser().parse_args(
        ["simulate", "--server-optimizer", "fedadam", "--dp-clip", "1", "--dp-noise", "1"]
    )
    policy = _simulation_options(args, demo=False).privacy()
    assert policy == {"dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}}


def test_serve_workers_must_be_a_sane_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["serve", "--workers", "3"]).workers == 3
    assert build_parser().parse_args(["serve"]).workers == 1
    for bad in ("0", "-2", "two", "65"):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["serve", "--workers", bad])
        assert exit_info.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_serve_workers_get_a_patient_health_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    import coordinator.heap
    from coordinator.cli import WORKER_HEALTHCHECK_SECONDS

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *_, **kwargs: calls.append(kwargs))
    # not in the test process: it would freeze its heap (tests/app/test_serving_heap.py)
    monkeypatch.setattr(coordinator.heap, "prepare_serving_heap", lambda: None)
    # serve exports these for its workers: set-then-delete makes monkeypatch restore them
    exported = ("HOST", "PORT", "DATA_DIR", "LOG_FORMAT")
    for name in ("PROMETHEUS_MULTIPROC_DIR", *(f"FEDREC_{option}" for option in exported)):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    data = tmp_path / "data"
    assert main(["serve", "--workers", "2", "--data-dir", str(data)]) == 0
    assert main(["serve", "--data-dir", str(data)]) == 0
    several, one = calls
    assert several["workers"] == 2
    assert several["timeout_worker_healthcheck"] == WORKER_HEALTHCHECK_SECONDS > 5
    assert "timeout_worker_healthcheck" not in one


@pytest.mark.parametrize("encoding", ["float16", "int8"])
def test_simulate_encoding_flag(encoding: str) -> None:
    args = build_parser().parse_args(["simulate", "--encoding", encoding])
    assert _simulation_options(args, demo=False).encoding == encoding
    default = build_parser().parse_args(["simulate"])
    assert _simulation_options(default, demo=False).encoding == "float32"


def test_simulate_refuses_an_unknown_encoding(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "--encoding", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_user_epochs_is_pinned_when_given_and_refuses_a_negative_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["simulate", "--user-epochs", "0"])
    options = _simulation_options(args, demo=False)
    assert options.user_epochs == 0
    assert "user_epochs" in options.pinned
    assert (
        "user_epochs"
        not in _simulation_options(build_parser().parse_args(["simulate"]), demo=False).pinned
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "--user-epochs", "-1"])
    assert "must be >= 0" in capsys.readouterr().err
