"""What the coordinator imports from secagg loads none of the participant's side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_shared_modules_do_not_load_the_client() -> None:
    script = (
        "import sys\n"
        "import participant_sdk.secagg.shamir, participant_sdk.secagg.prg\n"
        "import participant_sdk.secagg.fixed_point, participant_sdk.secagg.keys\n"
        "import participant_sdk.secagg.messages\n"
        "print('participant_sdk.secagg.client' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == "False"
