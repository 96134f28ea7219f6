"""The mask PRG is the ChaCha20 keystream of RFC 8439, read as little-endian uint32 words."""

from __future__ import annotations

import numpy as np
import pytest

from participant_sdk.secagg.prg import keystream_words, mask_words

# RFC 8439 A.1, test vector 1: key and nonce zero, block counter 0
ZERO_KEY_BLOCK = bytes.fromhex(
    "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
    "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
)
# RFC 8439 2.3.2: key 00..1f, nonce 000000090000004a00000000, block counter 1
RFC_KEY = bytes(range(32))
RFC_NONCE = (1).to_bytes(4, "little") + bytes.fromhex("000000090000004a00000000")
RFC_BLOCK = bytes.fromhex(
    "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
    "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
)


def test_mask_of_the_zero_seed_is_rfc_8439_test_vector_1() -> None:
    words = mask_words(bytes(32), 16)
    assert words.dtype == np.uint32
    assert words.tobytes() == ZERO_KEY_BLOCK
    assert int(words[0]) == 0xADE0B876  # little-endian words, not bytes


def test_keystream_matches_rfc_8439_block_function_vector() -> None:
    assert keystream_words(RFC_KEY, RFC_NONCE, 16).tobytes() == RFC_BLOCK


def test_a_longer_mask_extends_a_shorter_one() -> None:
    seed = bytes(range(1, 33))
    assert np.array_equal(mask_words(seed, 1000)[:37], mask_words(seed, 37))
    assert mask_words(seed, 0).size == 0


def test_different_seeds_give_different_masks() -> None:
    first = mask_words(bytes(32), 64)
    second = mask_words(bytes(31) + b"\x01", 64)
    assert not np.array_equal(first, second)


def test_masks_look_uniform() -> None:
    words = mask_words(bytes(range(32)), 100_000)
    # each of the 32 bits is set about half the time (sd of the mean is 0.0016)
    bits = (words[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.01)


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(33)])
def test_keys_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        mask_words(key, 4)


def test_nonce_must_be_16_bytes() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        keystream_words(bytes(32), bytes(12), 4)
