"""Fixed-point encoding of clipped float updates into Z_2^32, and decoding of their sum.

A participant clips every coordinate to ``[-clip, clip]`` (an update whose L2 norm is at
most ``clip`` already is) and encodes ``round(x * scale)`` modulo 2^32, two's complement.
The scale is the largest that keeps the sum of ``max_participants`` encoded inputs inside
the signed 32-bit range::

    scale = floor((2^31 - 1) / (max_participants * clip))

Bounds (``n`` inputs summed, ``n <= max_participants``):

- **no overflow**: ``|sum_i round(x_i * scale)| <= n * (clip * scale + 1/2)`` and the
  encoder rounds to at most ``floor(clip * scale)``, so the integer sum stays within
  ``[-(2^31 - 1), 2^31 - 1]`` and decodes unambiguously. More than ``max_participants``
  inputs may wrap around: ``decode_sum`` refuses a count above it.
- **error**: each coordinate is rounded to the nearest multiple of ``1 / scale``, an error of
  at most ``1 / (2 * scale)``; the decoded sum is within ``n / (2 * scale)`` of the sum of the
  clipped inputs: ``n * max_participants * clip / (2^32 - 2)`` times at most
  ``1 + 1 / scale`` (the floor in ``scale``), about ``n^2 * clip * 2.3e-10`` when
  ``max_participants = n``. For clip = 1 and 200 participants
  that is 9.3e-6 per coordinate of the sum (4.7e-8 per coordinate of the mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FixedPointCodec"]

_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class FixedPointCodec:
    """How floats in ``[-clip, clip]`` become uint32 words, for at most ``max_participants``."""

    clip: float
    max_participants: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite float, got {self.clip!r}")
        if not 1 <= self.max_participants <= 2**20:
            raise ValueError(f"max_participants must be in 1..2^20, got {self.max_participants}")
        if self.scale < 1:
            raise ValueError("clip * max_participants is too large for 32-bit fixed point")

    @property
    def scale(self) -> int:
        """Integer steps per unit: the largest that cannot overflow ``max_participants`` inputs."""
        return int(_INT32_MAX // (self.max_participants * self.clip))

    @property
    def max_sum_error(self) -> float:
        """The largest error per coordinate of a decoded sum of ``max_participants`` inputs."""
        return self.max_participants / (2 * self.scale)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Clip, scale and round ``values`` (finite floats) into uint32 words."""
        array = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(array)):
            raise ValueError("an update to encode must be finite")
        limit = np.floor(self.clip * self.scale)
        integers = np.clip(
            np.rint(np.clip(array, -self.clip, self.clip) * self.scale), -limit, limit
        )
        return integers.astype(np.int64).astype(np.uint32)

    def decode_sum(self, words: np.ndarray, count: int) -> np.ndarray:
        """The float64 sum of ``count`` encoded inputs from their sum modulo 2^32."""
        if not 0 <= count <= self.max_participants:
            raise ValueError(
                f"a sum of {count} inputs may have wrapped (max {self.max_participants})"
            )
        signed = np.asarray(words, dtype=np.uint32).view(np.int32).astype(np.float64)
        return signed / self.scale
