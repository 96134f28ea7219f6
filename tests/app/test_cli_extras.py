"""The ``fedrec`` command where extras are missing: it still starts, and each command
names the extra it needs (the SDK-only install has neither the server nor rich)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings")

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    MISSING = set(sys.argv[1].split(","))


    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in MISSING:
                raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
            return None


    sys.meta_path.insert(0, NotInstalled())
    from fedrec.cli import main

    sys.exit(main(sys.argv[2:]))
    """
)


def _fedrec(missing: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(missing), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_needs_no_extra() -> None:
    result = _fedrec((*SERVER, "rich"), "--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "migrate", "verify-lineage", "gc", "simulate", "demo"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["serve", "migrate", "gc"])
def test_server_commands_name_the_server_extra(command: str, tmp_path: Path) -> None:
    result = _fedrec((*SERVER, "rich"), command, "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "needs the server extra: pip install 'fedrec[server]'" in result.stderr


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_simulation_names_the_app_extra(command: str) -> None:
    result = _fedrec(("rich",), command)
    assert result.returncode == 1
    assert "needs the app extra: pip install 'fedrec[app]'" in result.stderr


def test_admin_commands_need_only_the_sdk() -> None:
    """An admin's laptop with `pip install fedrec` (the SDK alone) runs the admin commands."""
    result = _fedrec((*SERVER, "rich"), "federations", "recipes")
    assert result.returncode == 0, result.stderr
    assert "bpr-silos:" in result.stdout
    unreachable = _fedrec(
        (*SERVER, "rich"), "status", "f1", "--url", "http://127.0.0.1:9", "--admin-token", "t"
    )
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("fedrec status: error:"), unreachable.stderr
    assert "extra" not in unreachable.stderr
