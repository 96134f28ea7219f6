"""The SDK never imports the coordinator, the fedrec application or the server stack
(FastAPI, SQLAlchemy).

Partners install the SDK without the ``server`` extra, so the check runs every module
of ``participant_sdk`` in a fresh interpreter where those imports are blocked.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("coordinator", "fedrec", "fastapi", "sqlalchemy", "starlette", "alembic", "uvicorn")

SCRIPT = textwrap.dedent(
    """
    import importlib
    import importlib.abc
    import pkgutil
    import sys

    FORBIDDEN = {forbidden!r}


    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in FORBIDDEN:
                raise ImportError(f"participant_sdk must not import {{fullname}}")
            return None


    sys.meta_path.insert(0, Blocker())
    import participant_sdk

    for module in pkgutil.walk_packages(participant_sdk.__path__, "participant_sdk."):
        importlib.import_module(module.name)
    loaded = sorted(
        name for name in sys.modules if name.split(".")[0] in FORBIDDEN
    )
    assert not loaded, loaded
    print("ok", len([n for n in sys.modules if n.startswith("participant_sdk")]))
    """
).format(forbidden=FORBIDDEN)


def test_sdk_imports_without_server_packages() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
