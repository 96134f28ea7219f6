"""The files a user looks for first: a licence that matches the package metadata, a
changelog, and a contributing guide whose dev loop is the one CI runs."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_licence_file_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_contributing_gives_the_dev_loop_ci_runs() -> None:
    guide = (ROOT / "CONTRIBUTING.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("ruff check .", "ruff format --check .", "mypy", "pytest"):
        assert command in ci
        assert command in guide
    assert "lint-imports" in guide
    assert "FEDREC_TEST_POSTGRES_URL" in guide
    assert "FEDREC_REQUIRE_POSTGRES=1" in guide


def test_the_changelog_covers_the_admin_commands_and_the_partner_path() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    for topic in ("fedrec federations create", "evaluation-exists", "DataFileError"):
        assert topic in changelog
