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
    "NotEnoughShares",
    "lagrange_at_zero",
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


def lagrange_at_zero(xs: Sequence[int]) -> dict[int, int]:
    """The Lagrange coefficients at 0 for the points ``xs``.

    They depend only on which points answered, so a server reconstructing many secrets from
    the same responders computes them once.
    """
    coefficients = {}
    for i in xs:
        numerator, denominator = 1, 1
        for j in xs:
            if j != i:
                numerator = numerator * (-j) % PRIME
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


def reconstruct(
    shares: Mapping[int, bytes],
    *,
    threshold: int,
    coefficients: Mapping[int, int] | None = None,
) -> bytes:
    """The secret from at least ``threshold`` shares ``{x: share}``.

    The first ``threshold`` points (in ascending order) interpolate; every further share is
    checked against that polynomial. ``coefficients`` may pass ``lagrange_at_zero`` of those
    first points, computed once.
    """
    if len(shares) < threshold:
        raise NotEnoughShares(f"{len(shares)} shares, {threshold} needed")
    points = sorted(shares)
    basis = points[:threshold]
    values = {x: _value(shares[x]) for x in points}
    weights = coefficients if coefficients is not None else lagrange_at_zero(basis)
    if sorted(weights) != basis:
        raise ValueError("coefficients were computed for other points")
    secret = sum(weights[x] * values[x] for x in basis) % PRIME
    for extra in points[threshold:]:
        if _evaluate(basis, values, extra) != values[extra]:
            raise InconsistentShares(f"share {extra} does not match the others")
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise InconsistentShares("the shares interpolate to no 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")


def _evaluate(basis: Sequence[int], values: Mapping[int, int], at: int) -> int:
    """The interpolating polynomial through ``basis`` evaluated at ``at``."""
    total = 0
    for i in basis:
        numerator, denominator = 1, 1
        for j in basis:
            if j != i:
                numerator = numerator * (at - j) % PRIME
                denominator = denominator * (i - j) % PRIME
        total += values[i] * numerator * pow(denominator, -1, PRIME)
    return total % PRIME
