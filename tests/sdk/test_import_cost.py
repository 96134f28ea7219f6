"""What ``import participant_sdk`` costs: the thin client, nothing more.

The core (client, resources, types, errors, wire) must not load the recommender
(``participant_sdk.recsys``, ``participant_sdk.participant``), the server stack, the
``fedrec`` application or ``rich``; ``FederatedRecommender`` loads on first use. Each
check runs in a fresh interpreter, so no other test's imports count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NOT_IN_THE_CORE = (
    "participant_sdk.recsys",
    "participant_sdk.participant",
    # secure aggregation loads only when a federation uses it
    "participant_sdk.secagg",
    "rich",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "uvicorn",
    "coordinator",
    "fedrec",
)
# httpx imports its optional command line (click, pygments, rich) when they are
# installed, as they are in the dev environment: count only what the SDK adds.
DEPENDENCIES = "import httpx, numpy, pydantic, safetensors.numpy"


def _run(script: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def test_core_import_loads_no_recommender_server_app_or_rich() -> None:
    out = _run(
        f"""
        import json, sys
        {DEPENDENCIES}
        before = set(sys.modules)
        import participant_sdk
        added = sorted(set(sys.modules) - before)
        print(json.dumps({{"all": sorted(sys.modules), "added": added}}))
        """
    )
    # the SDK itself imports none of them, nor does anything it imports
    assert _loaded(out["added"], NOT_IN_THE_CORE) == []
    sdk_modules = [m for m in out["added"] if m.startswith("participant_sdk")]
    # the import cost: the client, its resources, types, errors and the wire format
    assert len(sdk_modules) <= 20, (
        f"import participant_sdk: {len(out['all'])} modules in all, {len(out['added'])} "
        f"beyond its dependencies, {len(sdk_modules)} of the SDK's own: {sdk_modules}"
    )


def test_core_imports_where_rich_is_not_installed() -> None:
    out = _run(
        """
        import importlib.abc, json, sys

        class NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, fullname, path=None, target=None):
                if fullname.split(".")[0] in ("rich", "click", "pygments"):
                    raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
                return None

        sys.meta_path.insert(0, NotInstalled())
        import participant_sdk
        from participant_sdk import Client, wire
        print(json.dumps({"all": sorted(sys.modules)}))
        """
    )
    assert _loaded(out["all"], NOT_IN_THE_CORE) == []


def test_the_recommender_loads_on_first_use() -> None:
    out = _run(
        """
        import json, sys
        import participant_sdk
        before = "participant_sdk.recsys" in sys.modules
        recommender = participant_sdk.FederatedRecommender
        from participant_sdk import StepOutcome
        from participant_sdk.participant import FederatedRecommender
        print(json.dumps({
            "before": before,
            "after": "participant_sdk.recsys" in sys.modules,
            "same": recommender is FederatedRecommender,
            "listed": "FederatedRecommender" in dir(participant_sdk),
            "outcome": str(StepOutcome),
        }))
        """
    )
    assert out["before"] is False
    assert out["after"] is True
    assert out["same"] is True
    assert out["listed"] is True
