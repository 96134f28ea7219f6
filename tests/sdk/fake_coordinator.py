"""A scripted stand-in for the coordinator, served through ``httpx.MockTransport``.

Routes map ``(method, path)`` to a queue of replies; each request takes the next reply
and the last one repeats. A reply is a response factory, or an exception to raise
(simulating a broken connection). Every request is recorded, body included.
"""

from __future__ import annotations

import base64
import hashlib
import json as jsonlib
from collections.abc import Callable
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from participant_sdk.wire import (
    MANIFEST_HEADER,
    SIGNATURE_HEADER,
    contributors_digest,
    encode_manifest,
)

Reply = Callable[[httpx.Request], httpx.Response] | Exception

BASE_URL = "http://coordinator.test"
TOKEN = "participant-token-123"
FID = "fed-1"
TS = "2026-01-02T03:04:05Z"
# the fake's lineage key; the clients of the SDK tests pin its public half
SIGNER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC_KEY = base64.b64encode(
    SIGNER.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()


def signed_weights_headers(
    data: bytes,
    *,
    version: int,
    fid: str = FID,
    signer: Ed25519PrivateKey = SIGNER,
    sha256: str | None = None,
    encodings: dict[str, dict[str, object]] | None = None,
) -> dict[str, str]:
    """The headers the coordinator serves weights with: ETag, version, signed manifest
    (``sha256`` overrides the digest the manifest names, to fake a mismatch; with
    ``encodings`` the bytes are of a compressed encoding and ``sha256`` is float32's)."""
    digest = hashlib.sha256(data).hexdigest()
    extra: dict[str, object] = {"encodings": encodings} if encodings else {}
    manifest = encode_manifest(
        {
            **extra,
            "federation_id": fid,
            "version": version,
            "versions": version + 1,
            "sha256": sha256 or digest,
            "size": len(data),
            "contributors": 0,
            "contributors_sha256": contributors_digest([]),
        }
    )
    return {
        "ETag": f'"{digest}"',
        "X-Model-Version": str(version),
        MANIFEST_HEADER: base64.b64encode(manifest).decode(),
        SIGNATURE_HEADER: base64.b64encode(signer.sign(manifest)).decode(),
    }


def respond(
    status: int = 200,
    json: object | None = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Callable[[httpx.Request], httpx.Response]:
    """A reply building a fresh response each time it is used."""

    def reply(_request: httpx.Request) -> httpx.Response:
        if json is not None:
            return httpx.Response(status, json=json, headers=headers)
        return httpx.Response(status, content=content, headers=headers)

    return reply


def problem(
    status: int,
    slug: str,
    detail: str = "it failed",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Callable[[httpx.Request], httpx.Response]:
    """An RFC 9457 problem reply, as the coordinator sends for every error."""
    body = {
        "type": f"urn:fedrec:problem:{slug}",
        "title": slug.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
        "instance": "/v1/...",
        **extra,
    }

    def reply(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status,
            content=jsonlib.dumps(body).encode(),
            headers={"Content-Type": "application/problem+json", **(headers or {})},
        )

    return reply


class FakeCoordinator:
    """Record requests and answer them from per-route reply queues."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[httpx.Request] = []

    def add(self, method: str, path: str, *replies: Reply) -> FakeCoordinator:
        self.routes.setdefault((method, path), []).extend(replies)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        key = (request.method, _raw_path(request))
        queue = self.routes.get(key)
        if not queue:
            return httpx.Response(404, json={"detail": f"no fake route for {key}"})
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        return reply(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def requests_to(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and _raw_path(r) == path]


def _raw_path(request: httpx.Request) -> str:
    """The path as sent, percent-escapes kept (so ``a%2Fb`` is one segment)."""
    return request.url.raw_path.decode("ascii").partition("?")[0]


def round_json(number: int = 1, state: str = "open", base_version: int = 0) -> dict[str, Any]:
    return {
        "number": number,
        "state": state,
        "base_version": base_version,
        "update_count": 0,
        "result_version": None,
        "opened_at": TS,
        "closed_at": None,
        "deadline_at": None,
    }


def federation_json(state: str = "active", current_round: int | None = 1) -> dict[str, Any]:
    return {
        "id": FID,
        "name": "movies",
        "state": state,
        "current_round": current_round,
        "latest_version": 0,
        "deployed_version": None,
        "participant_count": 2,
        "created_at": TS,
        "model": {"kind": "mf", "num_items": 4, "dim": 2, "seed": 0, "init_scale": 0.01},
        "strategy": {"name": "fedavg", "server_lr": 1.0},
        "rounds": {
            "min_participants": 1,
            "max_rounds": 10,
            "deadline_seconds": None,
            "below_quorum": "extend",
        },
        "target": None,
        "deploy": {"policy": "best", "metric": "ndcg@10"},
        "privacy": {"max_update_norm": None},
    }


def participant_json(state: str = "active") -> dict[str, Any]:
    return {"id": "p-1", "name": "shop-a", "state": state, "created_at": TS}


def model_version_json(version: int = 1) -> dict[str, Any]:
    return {
        "version": version,
        "round": version or None,
        "parent": version - 1 if version else None,
        "sha256": "ab" * 32,
        "chain_hash": "cd" * 32,
        "size": 123,
        "created_at": TS,
        "contributors": ["ef" * 32],
    }


def receipt_json(round_number: int = 1) -> dict[str, Any]:
    return {
        "update_id": "u-1",
        "round": round_number,
        "sha256": "12" * 32,
        "size": 456,
        "num_examples": 10,
        "received_at": TS,
    }
