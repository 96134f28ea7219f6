"""The mask generator: a ChaCha20 keystream (RFC 8439) read as little-endian uint32 words.

A 32-byte seed is the ChaCha20 key. Every seed is used for one mask only (pairwise seeds are
derived per round and pair, self-mask seeds are drawn per round), so the nonce can be fixed
at zero. Masks never come from ``random`` or ``numpy.random``: only a cipher's keystream is
indistinguishable from uniform to someone who does not hold the seed.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["SEED_BYTES", "keystream_words", "mask_words"]

SEED_BYTES = 32
# cryptography's ChaCha20 nonce: a 4-byte little-endian block counter, then RFC 8439's 12 bytes
_NONCE_BYTES = 16
_ZERO_NONCE = bytes(_NONCE_BYTES)


def keystream_words(key: bytes, nonce: bytes, count: int) -> np.ndarray:
    """``count`` uint32 words of the ChaCha20 keystream for ``key`` and the 16-byte ``nonce``."""
    if len(key) != SEED_BYTES:
        raise ValueError(f"a ChaCha20 key is {SEED_BYTES} bytes, got {len(key)}")
    if len(nonce) != _NONCE_BYTES:
        raise ValueError(f"the nonce is {_NONCE_BYTES} bytes (counter + RFC 8439 nonce)")
    if count < 0:
        raise ValueError("count must be >= 0")
    encryptor = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    stream = encryptor.update(bytes(4 * count))
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)


def mask_words(seed: bytes, count: int) -> np.ndarray:
    """The mask of ``count`` uint32 words that ``seed`` expands to (block counter 0, zero nonce)."""
    return keystream_words(seed, _ZERO_NONCE, count)
