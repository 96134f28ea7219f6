"""The SDK uses no model bytes the pinned signing key does not vouch for.

Finding 5 of issue 12: the SDK accepted bytes whose ETag was missing, weak, or
recomputed by whoever served them. Now every download must carry a strong sha256
``ETag`` and a manifest signed by the pinned Ed25519 key naming those bytes, this
federation and this version.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from participant_sdk import AsyncClient, Client, ModelSignatureError
from participant_sdk.wire import SIGNATURE_HEADER, encode_weights

from .fake_coordinator import (
    BASE_URL,
    FID,
    PUBLIC_KEY,
    TOKEN,
    FakeCoordinator,
    respond,
    signed_weights_headers,
)

WEIGHTS = f"/v1/federations/{FID}/models/1/weights"
DATA = encode_weights(
    {"item_factors": np.ones((3, 2), np.float32), "item_bias": np.zeros(3, np.float32)}
)


def _serve(fake: FakeCoordinator, headers: dict[str, str], data: bytes = DATA) -> None:
    fake.add("GET", WEIGHTS, respond(200, content=data, headers=headers))


def test_signed_weights_are_used(client: Client, fake: FakeCoordinator) -> None:
    _serve(fake, signed_weights_headers(DATA, version=1))
    assert client.models.weights(FID, 1)["item_factors"].shape == (3, 2)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda h: h.pop("X-Model-Manifest"), "not signed"),
        (lambda h: h.pop(SIGNATURE_HEADER), "not signed"),
        (lambda h: h.pop("ETag"), "missing, weak"),
        (lambda h: h.update(ETag="W/" + h["ETag"]), "missing, weak"),
        (lambda h: h.update(ETag='"abc"'), "missing, weak"),
        (lambda h: h.update({"X-Model-Version": "2"}), "of version 1"),
        (lambda h: h.update({SIGNATURE_HEADER: base64.b64encode(b"x" * 64).decode()}), "pinned"),
        (lambda h: h.update({SIGNATURE_HEADER: "not base64!"}), "not base64"),
    ],
)
def test_unsigned_or_tampered_headers_are_refused(
    client: Client, fake: FakeCoordinator, change: object, why: str
) -> None:
    headers = signed_weights_headers(DATA, version=1)
    change(headers)  # type: ignore[operator]
    _serve(fake, headers)
    with pytest.raises(ModelSignatureError, match=why):
        client.models.weights(FID, 1)
    assert len(client._weights_cache) == 0


def test_other_bytes_with_a_recomputed_etag_are_refused(
    client: Client, fake: FakeCoordinator
) -> None:
    # whoever serves the bytes can recompute the ETag, not the signature
    other = encode_weights(
        {"item_factors": np.full((3, 2), 9, np.float32), "item_bias": np.zeros(3, np.float32)}
    )
    genuine = signed_weights_headers(DATA, version=1)
    forged = {**genuine, "ETag": signed_weights_headers(other, version=1)["ETag"]}
    _serve(fake, forged, other)
    with pytest.raises(ModelSignatureError, match="names other bytes"):
        client.models.weights(FID, 1)


def test_a_key_other_than_the_pinned_one_is_refused(client: Client, fake: FakeCoordinator) -> None:
    impostor = Ed25519PrivateKey.generate()
    _serve(fake, signed_weights_headers(DATA, version=1, signer=impostor))
    with pytest.raises(ModelSignatureError, match="pinned key"):
        client.models.weights(FID, 1)


def test_another_federations_version_is_refused(client: Client, fake: FakeCoordinator) -> None:
    _serve(fake, signed_weights_headers(DATA, version=1, fid="fed-other"))
    with pytest.raises(ModelSignatureError, match="another federation"):
        client.models.weights(FID, 1)


def test_the_key_is_fetched_once_and_pinned(fake: FakeCoordinator) -> None:
    key = {"algorithm": "Ed25519", "public_key": PUBLIC_KEY, "key_id": "0" * 16}
    fake.add("GET", "/v1/signing-key", respond(200, key))
    fake.add(
        "GET",
        WEIGHTS,
        respond(200, content=DATA, headers=signed_weights_headers(DATA, version=1)),
    )
    with Client(BASE_URL, TOKEN, transport=fake.transport) as client:
        assert client.signing_key is None
        client.models.weights(FID, 1)
        client.models.weights(FID, 1)
        assert client.signing_key == PUBLIC_KEY
    assert len(fake.requests_to("GET", "/v1/signing-key")) == 1


async def test_async_client_refuses_an_impostor(fake: FakeCoordinator) -> None:
    impostor = Ed25519PrivateKey.generate()
    _serve(fake, signed_weights_headers(DATA, version=1, signer=impostor))
    async with AsyncClient(
        BASE_URL, TOKEN, transport=fake.transport, signing_key=PUBLIC_KEY
    ) as client:
        with pytest.raises(ModelSignatureError, match="pinned key"):
            await client.models.weights(FID, 1)
