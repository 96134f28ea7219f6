"""An accepted upload kicks the aggregation job; while the round is still incomplete the
kick decides so from a read-only session and never queues for the write lock."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain import aggregation_job
from coordinator.domain.lifecycle import Step, Trigger
from tests.factories import create_federation, enrol, put_update, update_bytes, wait_round_closed


def test_only_the_completing_upload_claims_the_round(
    settings: Settings, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    claims: list[Trigger] = []
    claim_in = aggregation_job.claim_in  # both paths' claim (two-step, one transaction)

    def recording_claim(*args: Any, **kwargs: Any) -> Any:
        claims.append(kwargs["trigger"])
        return claim_in(*args, **kwargs)

    monkeypatch.setattr(aggregation_job, "claim_in", recording_claim)
    with TestClient(create_app(settings, run_timer=False)) as client:
        ctx = client.app.state.context  # type: ignore[attr-defined]
        fid = create_federation(client, admin_headers)["id"]
        _, first = enrol(client, admin_headers, fid, "first")
        _, second = enrol(client, admin_headers, fid, "second")

        assert put_update(client, fid, 1, update_bytes(seed=1), first).status_code == 201
        outcome = aggregation_job.run(ctx, fid, 1, trigger=Trigger.UPLOAD)
        assert outcome.step is Step.WAIT
        assert outcome.version is None
        assert claims == []  # neither this run nor the upload's own kick took the lock

        assert put_update(client, fid, 1, update_bytes(seed=2), second).status_code == 201
        wait_round_closed(client, fid, 1, admin_headers)
    # exactly one claim, by the kick of the upload that completed the round
    assert claims == [Trigger.UPLOAD]
