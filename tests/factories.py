"""Test data builders: federations, participants, updates."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from coordinator.domain.context import Context
from coordinator.store.models import Update
from participant_sdk.wire import encode_update

NUM_ITEMS = 20
DIM = 4


def federation_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "test federation",
        "model": {"kind": "mf", "num_items": NUM_ITEMS, "dim": DIM, "seed": 7},
        "strategy": {"name": "fedavg"},
        "rounds": {"min_participants": 1, "max_rounds": 3},
    }
    body.update(overrides)
    return body


def create_federation(
    client: TestClient, admin: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    response = client.post("/v1/federations", json=federation_body(**overrides), headers=admin)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def enrol(
    client: TestClient, admin: dict[str, str], federation_id: str, name: str = "shop"
) -> tuple[str, dict[str, str]]:
    response = client.post(
        f"/v1/federations/{federation_id}/participants", json={"name": name}, headers=admin
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], {"Authorization": f"Bearer {body['token']}"}


def random_deltas(
    seed: int = 0, num_items: int = NUM_ITEMS, dim: int = DIM
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "item_factors": (rng.standard_normal((num_items, dim)) * 0.1).astype(np.float32),
        "item_bias": (rng.standard_normal(num_items) * 0.1).astype(np.float32),
    }


def update_bytes(
    *,
    round: int = 1,
    base_version: int = 0,
    num_examples: int = 10,
    seed: int = 0,
    deltas: dict[str, np.ndarray] | None = None,
) -> bytes:
    return encode_update(
        deltas if deltas is not None else random_deltas(seed),
        round=round,
        base_version=base_version,
        num_examples=num_examples,
    )


def put_update(
    client: TestClient,
    federation_id: str,
    number: int,
    body: bytes,
    headers: dict[str, str],
    content_type: str = "application/octet-stream",
) -> Any:
    return client.put(
        f"/v1/federations/{federation_id}/rounds/{number}/update",
        content=body,
        headers={**headers, "Content-Type": content_type},
    )


def stored_update_count(ctx: Context) -> int:
    with ctx.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Update)) or 0)


def blob_count(ctx: Context) -> int:
    return sum(1 for p in ctx.blobs.root.rglob("*") if p.is_file())


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem response of the given status and type; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:fedrec:problem:{slug}", body
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body
