"""The import rules of docs/architecture.md hold, and the doc names exactly the contracts
that enforce them.

The rules are import-linter contracts in ``pyproject.toml`` (``[tool.importlinter]``);
``lint-imports`` checks them over the whole import graph, lazy imports and indirect chains
included. The doc's table "What each package may import" names one contract per row.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
TABLE_HEADING = "## What each package may import"
# installed by the dev extra, next to the interpreter running the tests
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> list[dict[str, Any]]:
    with PYPROJECT.open("rb") as handle:
        contracts: list[dict[str, Any]] = tomllib.load(handle)["tool"]["importlinter"]["contracts"]
    return contracts


def _documented_contract_names() -> list[str]:
    """The last cell of every row of the doc's import table: one contract name in backticks."""
    text = ARCHITECTURE.read_text()
    assert TABLE_HEADING in text, f"docs/architecture.md lost its heading {TABLE_HEADING!r}"
    section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    assert len(rows) > 2, "the import table has no rows"
    names = []
    for row in rows[2:]:  # after the header and the |---| line
        cell = row.strip("|").split("|")[-1].strip()
        match = re.fullmatch(r"`([^`]+)`", cell)
        assert match, f"the contract cell of {row!r} must be one contract name in backticks"
        names.append(match.group(1))
    return names


def test_the_import_contracts_hold() -> None:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the dev extra (pip install -e '.[dev]')")
    result = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(PYPROJECT), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}\n{result.stderr}"
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in result.stdout, result.stdout


def test_the_architecture_doc_names_every_contract() -> None:
    configured = [contract["name"] for contract in _contracts()]
    documented = _documented_contract_names()
    assert len(set(configured)) == len(configured), "two contracts share a name"
    assert len(set(documented)) == len(documented), "the doc's table names a contract twice"
    assert sorted(documented) == sorted(configured), (
        "docs/architecture.md's import table and pyproject.toml's [tool.importlinter] "
        "contracts must name the same contracts"
    )
