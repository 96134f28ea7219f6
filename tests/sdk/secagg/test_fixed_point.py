"""Fixed point into Z_2^32: the documented error bound, and no overflow up to max_participants."""

from __future__ import annotations

import numpy as np
import pytest

from participant_sdk.secagg.fixed_point import FixedPointCodec


def _sum_words(encoded: list[np.ndarray]) -> np.ndarray:
    total = np.zeros(encoded[0].size, dtype=np.uint64)
    for words in encoded:
        total += words
    return (total % 2**32).astype(np.uint32)


@pytest.mark.parametrize(("clip", "n"), [(1.0, 3), (0.5, 50), (10.0, 200), (1e-3, 1000)])
def test_decoded_sum_is_within_the_documented_bound(clip: float, n: int) -> None:
    codec = FixedPointCodec(clip=clip, max_participants=n)
    rng = np.random.default_rng(n)
    inputs = [rng.uniform(-clip, clip, 500) for _ in range(n)]
    decoded = codec.decode_sum(_sum_words([codec.encode(x) for x in inputs]), n)
    error = np.abs(decoded - np.sum(inputs, axis=0)).max()
    assert error <= codec.max_sum_error
    # the bound stated in the module docstring: n * max_participants * clip / (2^32 - 2), +1 %
    assert codec.max_sum_error <= n * n * clip / (2**32 - 2) * 1.01


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_extreme_inputs_at_max_participants_do_not_wrap(sign: float) -> None:
    codec = FixedPointCodec(clip=2.0, max_participants=200)
    inputs = [np.full(4, sign * 2.0)] * 200
    decoded = codec.decode_sum(_sum_words([codec.encode(x) for x in inputs]), 200)
    assert np.allclose(decoded, sign * 400.0, atol=codec.max_sum_error)


def test_values_beyond_the_clip_are_clipped() -> None:
    codec = FixedPointCodec(clip=1.0, max_participants=4)
    decoded = codec.decode_sum(codec.encode(np.array([5.0, -7.0, 0.25])), 1)
    assert np.allclose(decoded, [1.0, -1.0, 0.25], atol=codec.max_sum_error)


def test_non_finite_updates_are_refused() -> None:
    codec = FixedPointCodec(clip=1.0, max_participants=4)
    with pytest.raises(ValueError, match="finite"):
        codec.encode(np.array([0.0, np.nan]))


def test_a_sum_of_more_than_max_participants_is_refused() -> None:
    codec = FixedPointCodec(clip=1.0, max_participants=4)
    with pytest.raises(ValueError, match="wrapped"):
        codec.decode_sum(np.zeros(2, dtype=np.uint32), 5)


@pytest.mark.parametrize(("clip", "n"), [(0.0, 3), (float("inf"), 3), (1.0, 0), (1e12, 3)])
def test_impossible_codecs_are_refused(clip: float, n: int) -> None:
    with pytest.raises(ValueError, match="clip|max_participants"):
        FixedPointCodec(clip=clip, max_participants=n)
