"""The SDK uses no model bytes the pinned signing key does not vouch for.

Finding 5 of issue 12: the SDK accepted bytes whose ETag was missing, weak, or
recomputed by whoever served them. Now every download must carry a strong sha256
``ETag`` and a manifest signed by the pinned Ed25519 key naming those bytes, this
federation and this version.
"""

from __future__ import annotations

import base64
import hashlib
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from participant_sdk import AsyncClient, Client, ModelSignatureError
from participant_sdk.wire import (
    ENCODING_HEADER,
    SIGNATURE_HEADER,
    Encoding,
    encode_model,
    encode_weights,
)

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


class TestCompressedDownloads:
    """A compressed download is verified as served: the signed manifest's ``encodings``
    names its bytes, and it comes back as float32."""

    TENSORS: ClassVar[dict[str, npt.NDArray[np.float32]]] = {
        "item_factors": (np.arange(6, dtype=np.float32).reshape(3, 2) / 7).astype(np.float32),
        "item_bias": np.array([0.5, -1.0, 0.25], np.float32),
    }

    def _headers(self, data: bytes, encoding: str, named: bytes | None = None) -> dict[str, str]:
        digest = hashlib.sha256(named if named is not None else data).hexdigest()
        headers = signed_weights_headers(
            data,
            version=1,
            sha256="f" * 64,  # the float32 bytes' digest: not these bytes
            encodings={encoding: {"sha256": digest, "size": len(data)}},
        )
        return {**headers, ENCODING_HEADER: encoding}

    @pytest.mark.parametrize("encoding", ["float16", "int8"])
    def test_signed_compressed_weights_are_decoded_to_float32(
        self, client: Client, fake: FakeCoordinator, encoding: Encoding
    ) -> None:
        data = encode_model(self.TENSORS, encoding)
        _serve(fake, self._headers(data, encoding), data)
        weights = client.models.weights(FID, 1, encoding=encoding)
        assert weights["item_factors"].dtype == np.float32
        np.testing.assert_allclose(
            np.asarray(weights["item_factors"], np.float64), self.TENSORS["item_factors"], atol=0.01
        )
        assert fake.requests[-1].url.params["encoding"] == encoding

    def test_bytes_the_manifest_does_not_name_for_the_encoding_are_refused(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        data = encode_model(self.TENSORS, "int8")
        other = encode_model({**self.TENSORS, "item_bias": np.zeros(3, np.float32)}, "int8")
        _serve(fake, self._headers(data, "int8", named=other), data)
        with pytest.raises(ModelSignatureError, match="names other bytes"):
            client.models.weights(FID, 1)
        assert len(client._weights_cache) == 0

    def test_an_encoding_the_manifest_does_not_sign_is_refused(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        data = encode_model(self.TENSORS, "float16")
        headers = self._headers(data, "float16")
        _serve(fake, {**headers, ENCODING_HEADER: "int8"}, data)
        with pytest.raises(ModelSignatureError, match="encoding int8"):
            client.models.weights(FID, 1)

    def test_another_encoding_than_asked_is_refused(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        data = encode_model(self.TENSORS, "float16")
        _serve(fake, self._headers(data, "float16"), data)
        with pytest.raises(ModelSignatureError, match="asked for int8"):
            client.models.weights(FID, 1, encoding="int8")

    def test_unknown_encoding_header_is_refused(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        _serve(fake, {**signed_weights_headers(DATA, version=1), ENCODING_HEADER: "bf16"})
        with pytest.raises(ModelSignatureError, match="bf16"):
            client.models.weights(FID, 1)

    def test_each_encoding_is_cached_apart(self, client: Client, fake: FakeCoordinator) -> None:
        data = encode_model(self.TENSORS, "float16")
        _serve(fake, self._headers(data, "float16"), data)
        client.models.weights(FID, 1, encoding="float16")
        assert len(client._weights_cache) == 1
        fake.routes.clear()
        _serve(fake, signed_weights_headers(DATA, version=1))
        plain = client.models.weights(FID, 1, encoding="float32")
        assert len(client._weights_cache) == 2
        assert "If-None-Match" not in fake.requests[-1].headers
        assert (np.asarray(plain["item_factors"]) == 1).all()


async def test_async_compressed_download(fake: FakeCoordinator) -> None:
    tensors = TestCompressedDownloads.TENSORS
    data = encode_model(tensors, "int8")
    _serve(fake, TestCompressedDownloads()._headers(data, "int8"), data)
    async with AsyncClient(
        BASE_URL, TOKEN, transport=fake.transport, signing_key=PUBLIC_KEY
    ) as client:
        weights = await client.models.weights(FID, 1, encoding="int8")
    np.testing.assert_allclose(
        np.asarray(weights["item_bias"], np.float64), tensors["item_bias"], atol=0.01
    )
