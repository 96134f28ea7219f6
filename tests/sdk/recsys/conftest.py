"""Fixtures: the MovieLens 100K location (tests skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The ML-100K directory from FEDREC_ML100K_DIR (default ../shared/datasets/ml-100k)."""
    default = REPO_ROOT / ".." / "shared" / "datasets" / "ml-100k"
    path = Path(os.environ.get("FEDREC_ML100K_DIR", default))
    if not (path / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {path} (set FEDREC_ML100K_DIR)")
    return path
