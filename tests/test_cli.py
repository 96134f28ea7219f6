"""The ``fedrec`` command line: migrate, verify-lineage, gc, help."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from coordinator.cli import main


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
    from coordinator.store.blobs import BlobStore

    main(["migrate", "--data-dir", str(data_dir)])
    blobs = BlobStore(data_dir / "blobs")
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
    from coordinator.cli import _simulation_options, build_parser
    from coordinator.simulation import SimulationOptions

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
