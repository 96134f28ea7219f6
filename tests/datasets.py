"""Where the test suite finds MovieLens 100K (never copied into the project)."""

from __future__ import annotations

import os
from pathlib import Path

_DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "ml-100k"


def ml100k_dir() -> Path | None:
    """``$FEDREC_ML100K_DIR`` or ``../shared/datasets/ml-100k``; None when absent."""
    path = Path(os.environ.get("FEDREC_ML100K_DIR", _DEFAULT))
    return path if (path / "u.data").is_file() else None


ML100K_DIR = ml100k_dir()
