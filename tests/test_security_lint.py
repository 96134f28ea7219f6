"""bandit, the security linter .ci/run runs, finds nothing in the shipped code: every
finding is fixed or carries a ``# nosec <id> # reason`` (configuration: pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bandit_is_clean() -> None:
    bandit = Path(sys.executable).parent / "bandit"
    result = subprocess.run(  # our own venv's tool on our own tree
        [str(bandit), "-q", "-c", "pyproject.toml", "-r"]
        + ["coordinator", "participant_sdk", "fedrec", "bench", "migrations"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
