"""``wire.verify_manifest`` remembers verified manifests, never refused ones.

Every participant of a process checks the same signed manifest each round; the
signature check runs once per (manifest, signature, key), and a forged or re-keyed
manifest is still refused after a genuine one was remembered.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from participant_sdk import wire
from participant_sdk.wire import MANIFEST_HEADER, SIGNATURE_HEADER, WireError, verify_manifest

from .fake_coordinator import PUBLIC_KEY, signed_weights_headers


def _signed(version: int = 3) -> tuple[str, str]:
    headers = signed_weights_headers(b"weights bytes", version=version)
    return headers[MANIFEST_HEADER], headers[SIGNATURE_HEADER]


def test_a_verified_manifest_is_checked_once() -> None:
    wire._verified_manifest.cache_clear()
    manifest, signature = _signed()
    first = verify_manifest(manifest, signature, PUBLIC_KEY)
    first["version"] = 99  # the caller's dict is its own
    second = verify_manifest(manifest, signature, PUBLIC_KEY)
    assert second["version"] == 3
    info = wire._verified_manifest.cache_info()
    assert (info.hits, info.misses) == (1, 1)


def test_a_refused_manifest_stays_refused_after_a_good_one() -> None:
    wire._verified_manifest.cache_clear()
    manifest, signature = _signed()
    verify_manifest(manifest, signature, PUBLIC_KEY)
    _, other_signature = _signed(version=4)
    with pytest.raises(WireError, match="does not verify"):
        verify_manifest(manifest, other_signature, PUBLIC_KEY)
    stranger = Ed25519PrivateKey.generate().public_key()
    other_key = base64.b64encode(
        stranger.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
    for _ in range(2):  # not remembered as good either
        with pytest.raises(WireError, match="does not verify"):
            verify_manifest(manifest, signature, other_key)
    assert wire._verified_manifest.cache_info().currsize == 1
