"""Test data builders and API helpers: federations, participants, updates, weights, rounds."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.store.files_and_rows import FilesAndRows
from coordinator.store.local_blobs import LocalBlobStore
from coordinator.store.models import Blob, BlobChunk, Update
from participant_sdk.recsys.ease import item_gram
from participant_sdk.wire import decode_weights, encode_update

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


def gram_update(
    users: np.ndarray, items: np.ndarray, num_items: int, *, round: int = 1, base_version: int = 0
) -> tuple[np.ndarray, bytes]:
    """An EASE participant's upload of its interactions: their item Gram matrix (returned,
    for the test's pooled reference) and its non-zeros encoded row-sparse (flat i * N + j)."""
    gram = item_gram(users, items, num_items)
    keys = np.flatnonzero(gram)
    body = encode_update(
        {"ease_gram": gram.reshape(-1)[keys].astype(np.float32)},
        round=round,
        base_version=base_version,
        num_examples=int(users.size),
        rows=keys,
    )
    return gram, body


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


def weights(
    client: TestClient, federation_id: str, version: int | str, headers: dict[str, str]
) -> dict[str, np.ndarray]:
    """Download and decode a model version's weights."""
    response = client.get(
        f"/v1/federations/{federation_id}/models/{version}/weights", headers=headers
    )
    assert response.status_code == 200, response.text
    return decode_weights(response.content)


def wait_round_closed(
    client: TestClient,
    federation_id: str,
    number: int,
    headers: dict[str, str],
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Poll until the round is no longer open (closed or failed); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        url = f"/v1/federations/{federation_id}/rounds/{number}"
        body: dict[str, Any] = client.get(url, headers=headers).json()
        if body["state"] in ("closed", "failed"):
            return body
        if time.monotonic() >= deadline:
            raise AssertionError(f"round {number} did not close within {timeout:g} s: {body}")
        time.sleep(0.05)


def evaluate(
    client: TestClient, federation_id: str, version: int, headers: dict[str, str], **body: object
) -> Any:
    """Report metrics for a version (defaults: validation split, ndcg@10 0.1, 10 users)."""
    payload = {"split": "validation", "metrics": {"ndcg@10": 0.1}, "num_users": 10, **body}
    return client.post(
        f"/v1/federations/{federation_id}/models/{version}/evaluations",
        json=payload,
        headers=headers,
    )


def stored_update_count(ctx: Context) -> int:
    with ctx.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Update)) or 0)


def local_blobs(ctx: Context) -> LocalBlobStore:
    """The folder of the context's blob store, which these tests expect to be local."""
    blobs = ctx.blobs.files if isinstance(ctx.blobs, FilesAndRows) else ctx.blobs
    assert isinstance(blobs, LocalBlobStore)
    return blobs


def tamper_blob(ctx: Context, digest: str) -> None:
    """Flip one byte of a stored blob (the last of its file or of its first database row)."""
    files = local_blobs(ctx)
    if files.exists(digest):
        path = files.path(digest)
        path.chmod(0o600)
        data = path.read_bytes()
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        return
    with ctx.sessions.begin() as session:
        row = session.get(Blob, digest)
        if row is not None and row.data is not None:  # its bytes in its row
            row.data = row.data[:-1] + bytes([row.data[-1] ^ 1])
            return
        chunk = session.get(BlobChunk, (digest, 0))
        assert chunk is not None, f"blob {digest} is neither a file nor rows"
        chunk.data = chunk.data[:-1] + bytes([chunk.data[-1] ^ 1])


def blob_count(ctx: Context) -> int:
    """Blobs stored: files, and small blobs kept as database rows."""
    files = sum(1 for p in local_blobs(ctx).root.rglob("*") if p.is_file())
    with ctx.read_sessions() as session:
        return files + int(session.scalar(select(func.count()).select_from(Blob)) or 0)


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


def domain_federation(
    ctx: Context,
    participants: int = 2,
    *,
    strategy: Any = None,
    privacy: Any = None,
    deploy: Any = None,
    **policy: Any,
) -> tuple[str, list[Principal]]:
    """A federation built through the domain services, and its participants' principals."""
    from coordinator.domain.federations import create_federation as create
    from coordinator.domain.participants import enrol_participant
    from coordinator.domain.specs import (
        DeployPolicy,
        ModelSpec,
        PrivacyPolicy,
        RoundPolicy,
        StrategySpec,
    )

    admin = Principal(is_admin=True)
    view = create(
        ctx,
        name="f",
        model=ModelSpec(kind="mf", num_items=NUM_ITEMS, dim=DIM),
        strategy=strategy or StrategySpec(),
        rounds=RoundPolicy(**policy),
        catalog=None,
        target=None,
        deploy=deploy or DeployPolicy(),
        privacy=privacy or PrivacyPolicy(),
    )
    principals = []
    for i in range(participants):
        row, _token = enrol_participant(ctx, admin, view.row.id, name=f"p{i}")
        principals.append(Principal(False, row.id, view.row.id, row.name))
    return view.row.id, principals


def dp_noise(dp: Any, spec: Any) -> dict[str, np.ndarray]:
    """A DP round's whole noise, drawn in ``spec`` order from the round's generator, as
    the aggregator draws it tensor by tensor (a reference for the tests)."""
    rng = dp.generator()
    return {name: rng.standard_normal(s.shape) * dp.noise_std for name, s in spec.items()}
