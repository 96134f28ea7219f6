"""bench.request_cpu runs both request patterns end to end (no figures asserted)."""

from __future__ import annotations

import pytest

from bench.request_cpu import run


@pytest.mark.parametrize("combined", [False, True])
def test_both_request_patterns_complete(combined: bool) -> None:
    # every request raises on a non-2xx answer, so completing means the coordinator
    # accepted the report (on its own or in the upload) and the upload
    assert run(2, combined) > 0.0
