"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A secret is the constant term of a random polynomial of degree ``t - 1``; share ``x`` is
the polynomial at ``x``. Any ``t`` shares give the secret by Lagrange interpolation at 0,
fewer reveal nothing about it. The field is larger than every 32-byte secret (a Mersenne
prime, so nothing here depends on a constant someone could mistype silently).

Tampering: with exactly ``t`` shares a changed share gives a wrong secret undetected, so
callers check what they reconstruct (a public key, a commitment). With more than ``t``
shares, ``reconstruct`` checks that every share lies on the one polynomial and raises
``InconsistentShares`` if not.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

__all__ = [
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "InconsistentShares",
    "Interpolation",
    "NotEnoughShares",
    "reconstruct",
    "split",
]

PRIME = 2**521 - 1
SECRET_BYTES = 32
# a field element as fixed-length big-endian bytes (521 bits)
SHARE_BYTES = 66


class NotEnoughShares(ValueError):
    """Fewer than ``threshold`` shares: the secret is information-theoretically hidden."""


class InconsistentShares(ValueError):
    """The shares do not lie on one polynomial of degree ``threshold - 1``: one was changed."""


def split(secret: bytes, *, xs: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Share ``secret`` at the points ``xs`` (distinct, 1..PRIME-1); ``threshold`` recover it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, got {len(secret)}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and in 1..PRIME-1")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in 1..{len(xs)}, got {threshold}")
    # coefficients from the OS CSPRNG: they are as secret as the secret itself
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        value = 0
        for coefficient in reversed(coefficients):  # Horner
            value = (value * x + coefficient) % PRIME
        shares[x] = value.to_bytes(SHARE_BYTES, "big")
    return shares


def _coefficients(basis: Sequence[int], at: int) -> dict[int, int]:
    """The Lagrange coefficients that evaluate the polynomial through ``basis`` at ``at``."""
    coefficients = {}
    for i in basis:
        numerator, denominator = 1, 1
        for j in basis:
            if j != i:
                numerator = numerator * (at - j) % PRIME
                denominator = denominator * (i - j) % PRIME
        coefficients[i] = numerator * pow(denominator, -1, PRIME) % PRIME
    return coefficients


def _value(share: bytes) -> int:
    if len(share) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(share)}")
    value = int.from_bytes(share, "big")
    if value >= PRIME:
        raise ValueError("a share is not a field element")
    return value


class Interpolation:
    """Reconstruction from shares at a fixed set of points.

    The first ``threshold`` points (ascending) interpolate; every further share is checked
    against that polynomial. The coefficients depend only on the points, so a server that
    reconstructs many secrets from the same responders computes them once.
    """

    def __init__(self, points: Sequence[int], *, threshold: int) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        if len(set(points)) != len(points):
            raise ValueError("share points must be distinct")
        if len(points) < threshold:
            raise NotEnoughShares(f"{len(points)} shares, {threshold} needed")
        self.points = sorted(points)
        self.threshold = threshold
        basis = self.points[:threshold]
        self._at_zero = _coefficients(basis, 0)
        self._checks = {x: _coefficients(basis, x) for x in self.points[threshold:]}

    def reconstruct(self, shares: Mapping[int, bytes]) -> bytes:
        """The secret from one share per point; ``InconsistentShares`` if they disagree."""
        if sorted(shares) != self.points:
            raise ValueError("the shares must come from exactly the interpolation's points")
        values = {x: _value(shares[x]) for x in self.points}
        secret = sum(c * values[x] for x, c in self._at_zero.items()) % PRIME
        for extra, coefficients in self._checks.items():
            if sum(c * values[x] for x, c in coefficients.items()) % PRIME != values[extra]:
                raise InconsistentShares(f"share {extra} does not match the others")
        if secret >= 2 ** (8 * SECRET_BYTES):
            raise InconsistentShares("the shares interpolate to no 32-byte secret")
        return secret.to_bytes(SECRET_BYTES, "big")


def reconstruct(shares: Mapping[int, bytes], *, threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares ``{x: share}`` (extra shares are checked)."""
    if len(shares) < threshold:
        raise NotEnoughShares(f"{len(shares)} shares, {threshold} needed")
    return Interpolation(list(shares), threshold=threshold).reconstruct(shares)
