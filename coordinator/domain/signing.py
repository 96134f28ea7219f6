"""The coordinator's lineage signing key (Ed25519): signs every model version's manifest.

The key is its own secret, distinct from the token-hash key (``secret_key``): whoever
can verify tokens cannot forge history, and a leaked token key does not let anyone sign.
Every process and replica of one deployment must hold the same key (a shared
``data_dir``, or ``FEDREC_SIGNING_KEY``/``FEDREC_SIGNING_KEY_FILE``), or their
versions would verify under different public keys.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = ["ALGORITHM", "LineageSigner", "generate_signing_key_pem"]

ALGORITHM = "Ed25519"


def generate_signing_key_pem() -> bytes:
    """A new Ed25519 private key, PKCS#8 PEM (unencrypted: the file is mode 0600)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class LineageSigner:
    """Signs manifests with the private key and verifies them with its public half."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self._public: Ed25519PublicKey = private_key.public_key()
        self.public_key_raw = self._public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def from_pem(cls, pem: bytes) -> LineageSigner:
        """Load a PKCS#8 PEM Ed25519 private key; ValueError names what is wrong."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the lineage signing key must be an Ed25519 private key")
        return cls(key)

    @property
    def public_key_b64(self) -> str:
        """The raw 32-byte public key, base64: what participants pin."""
        return base64.b64encode(self.public_key_raw).decode("ascii")

    @property
    def key_id(self) -> str:
        """A short fingerprint of the public key (sha256, first 16 hex digits)."""
        return hashlib.sha256(self.public_key_raw).hexdigest()[:16]

    def sign(self, data: bytes) -> str:
        """The base64 Ed25519 signature of ``data``."""
        return base64.b64encode(self._private.sign(data)).decode("ascii")

    def verify(self, data: bytes, signature_b64: str) -> bool:
        """Does ``signature_b64`` sign ``data`` under this key?"""
        try:
            self._public.verify(base64.b64decode(signature_b64, validate=True), data)
        except (InvalidSignature, ValueError):
            return False
        return True
