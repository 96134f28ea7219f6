"""``fedrec simulate`` ends an expected failure with one clear line and exit code 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrec.cli import main
from fedrec.local_server import embedded_coordinator

SMALL = ["--participants", "2", "--rounds", "2", "--dim", "8", "--local-epochs", "1"]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert lines, "no error message"
    assert lines[-1].startswith("fedrec simulate: error: ")
    return lines[-1]


@pytest.mark.slow
def test_diverging_participants_end_the_run_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --model bpr: the recipe search would otherwise pick ials, which has no --lr
    code = main(
        ["simulate", *SMALL, "--model", "bpr", "--lr", "1e9", "--data-dir", str(tmp_path / "c")]
    )
    assert code == 1
    line = _error_line(capsys)
    assert "local training diverged on every participant in round 1" in line
    assert "tensor 'item_factors'" in line
    assert "1e+09, 5e+08, 2.5e+08, 1.25e+08" in line
    assert "Lower --lr" in line


def test_unreachable_coordinator(capsys: pytest.CaptureFixture[str]) -> None:
    # port 9 (discard) on the loopback: nothing listens, the connection is refused
    code = main(["simulate", *SMALL, "--coordinator", "http://127.0.0.1:9", "--admin-token", "t"])
    assert code == 1
    assert "cannot reach the coordinator (POST http://127.0.0.1:9/" in _error_line(capsys)


@pytest.mark.slow
def test_refusal_by_the_coordinator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with embedded_coordinator(tmp_path) as (url, _token):
        code = main(["simulate", *SMALL, "--coordinator", url, "--admin-token", "wrong"])
    assert code == 1
    line = _error_line(capsys)
    assert f"the coordinator refused POST {url}/" in line
    assert "(401 " in line


def test_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    code = main(["simulate", "--dataset", "csv", "--data", str(missing)])
    assert code == 1
    assert _error_line(capsys).endswith(f"cannot read {missing}: No such file or directory")


def test_data_file_without_the_named_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plays.csv"
    path.write_text("listener,track\n1,2\n")
    code = main(["simulate", "--dataset", "csv", "--data", str(path), "--user-col", "user"])
    assert code == 1
    line = _error_line(capsys)
    assert f"cannot load {path}: column 'user' is not in the header" in line


def test_debug_keeps_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError):
        main(["simulate", "--dataset", "csv", "--data", str(missing), "--debug"])


def test_data_file_with_a_header_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "export.csv"
    path.write_text("customer,sku,ts\n")
    code = main(["simulate", "--dataset", "csv", "--data", str(path)])
    assert code == 1
    line = _error_line(capsys)
    assert line.endswith(f"cannot load {path}: no interaction rows (a header alone, or empty)")
