"""Key agreement, key derivation and the binding of every message to its round.

Each participant holds two X25519 key pairs per round (as in Bonawitz et al.): ``c`` for
the authenticated encryption of its share messages, ``s`` for its pairwise mask seeds.
They are separate so that the coordinator, when it reconstructs a dropped participant's
``s`` key, still cannot read the share messages addressed to it.

Every derived key and every associated-data block starts with the round's ``RoundContext``
(federation, round), so material from one round is useless in any other: the masks of
another round do not cancel, and a ciphertext moved into another round fails to decrypt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_BYTES",
    "PROTOCOL",
    "RoundContext",
    "derive_pair_key",
    "mask_seed",
    "mask_sign",
    "public_key_of",
    "self_mask_commitment",
]

PROTOCOL = "fedrec-secagg/v1"
KEY_BYTES = 32


@dataclass(frozen=True)
class RoundContext:
    """The round every message belongs to."""

    federation_id: str
    round_number: int

    def __post_init__(self) -> None:
        if not self.federation_id or self.round_number < 0:
            raise ValueError("a round context needs a federation id and a round number >= 0")

    def bind(self, purpose: str, *parts: str) -> bytes:
        """Canonical bytes naming this round, a purpose and participants (HKDF info, AEAD data)."""
        fields = [PROTOCOL, purpose, self.federation_id, self.round_number, *parts]
        return json.dumps(fields, separators=(",", ":")).encode()


def public_key_of(private_key: bytes) -> bytes:
    """The raw X25519 public key of a raw 32-byte private key."""
    key = X25519PrivateKey.from_private_bytes(private_key)
    return key.public_key().public_bytes_raw()


def derive_pair_key(
    private_key: bytes,
    peer_public_key: bytes,
    *,
    context: RoundContext,
    purpose: str,
    first: str,
    second: str,
) -> bytes:
    """A 32-byte key from X25519(private, peer) with HKDF-SHA256, bound to round and pair.

    ``first`` and ``second`` name the pair in the order the purpose needs: sorted for a
    pairwise mask seed (both ends derive the same seed), sender then recipient for a share
    message key (each direction its own key).
    """
    if len(peer_public_key) != KEY_BYTES:
        raise ValueError(f"an X25519 public key is {KEY_BYTES} bytes")
    shared = X25519PrivateKey.from_private_bytes(private_key).exchange(
        X25519PublicKey.from_public_bytes(peer_public_key)
    )
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=context.bind(purpose, first, second),
    ).derive(shared)


def mask_seed(
    private_key: bytes, peer_public_key: bytes, *, context: RoundContext, me: str, peer: str
) -> bytes:
    """The pairwise mask seed of ``me`` and ``peer``: the same at both ends."""
    first, second = sorted((me, peer))
    return derive_pair_key(
        private_key, peer_public_key, context=context, purpose="mask", first=first, second=second
    )


def mask_sign(me: str, peer: str) -> int:
    """+1 if ``me`` adds the pair's mask, -1 if it subtracts it: the pair's masks cancel."""
    if me == peer:
        raise ValueError("a participant has no pairwise mask with itself")
    return 1 if me < peer else -1


def self_mask_commitment(seed: bytes, *, context: RoundContext, participant: str) -> bytes:
    """SHA-256 commitment to a self-mask seed, so a reconstructed seed can be checked.

    The seed is 32 random bytes, so the commitment reveals nothing about it.
    """
    digest = hashes.Hash(hashes.SHA256())
    digest.update(context.bind("self-mask-commitment", participant))
    digest.update(seed)
    return digest.finalize()
