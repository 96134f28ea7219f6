"""Shamir t-of-n: any t shares recover the secret; fewer cannot; tampering is caught."""

from __future__ import annotations

import itertools
import secrets

import pytest

from participant_sdk.secagg import shamir

POINTS = list(range(1, 8))


def _share(threshold: int = 4) -> tuple[bytes, dict[int, bytes]]:
    secret = secrets.token_bytes(32)
    return secret, shamir.split(secret, xs=POINTS, threshold=threshold)


def test_every_subset_of_threshold_shares_recovers_the_secret() -> None:
    secret, shares = _share()
    for subset in itertools.combinations(POINTS, 4):
        assert shamir.reconstruct({x: shares[x] for x in subset}, threshold=4) == secret


def test_missing_shares_above_the_threshold_do_not_matter() -> None:
    secret, shares = _share()
    for missing in itertools.combinations(POINTS, 3):
        present = {x: s for x, s in shares.items() if x not in missing}
        assert shamir.reconstruct(present, threshold=4) == secret


def test_fewer_than_threshold_shares_are_refused() -> None:
    _, shares = _share()
    with pytest.raises(shamir.NotEnoughShares, match="3 shares, 4 needed"):
        shamir.reconstruct({x: shares[x] for x in POINTS[:3]}, threshold=4)


def _evaluate(points: dict[int, int], at: int) -> int:
    """The polynomial through ``points`` at ``at`` (plain Lagrange, independent of the module)."""
    total = 0
    for i, value in points.items():
        term = value
        for j in points:
            if j != i:
                term = term * (at - j) * pow(i - j, -1, shamir.PRIME) % shamir.PRIME
        total += term
    return total % shamir.PRIME


def test_below_threshold_shares_fit_every_secret() -> None:
    # t-1 shares and ANY guessed secret lie on one polynomial of degree t-1, so a third
    # share exists that makes the guess the reconstructed secret: t-1 shares reveal nothing
    _, shares = _share(threshold=3)
    for guess in (bytes(32), b"\xff" * 32, secrets.token_bytes(32)):
        known = {0: int.from_bytes(guess, "big")}
        known |= {x: int.from_bytes(shares[x], "big") for x in (1, 2)}
        third = _evaluate(known, 3).to_bytes(shamir.SHARE_BYTES, "big")
        assert shamir.reconstruct({1: shares[1], 2: shares[2], 3: third}, threshold=3) == guess


def test_a_tampered_share_among_extra_shares_is_detected() -> None:
    _, shares = _share()
    for victim in POINTS:
        tampered = dict(shares)
        value = (int.from_bytes(shares[victim], "big") + 1) % shamir.PRIME
        tampered[victim] = value.to_bytes(shamir.SHARE_BYTES, "big")
        with pytest.raises(shamir.InconsistentShares):
            shamir.reconstruct(tampered, threshold=4)


def test_a_tampered_share_at_exactly_threshold_gives_a_different_secret() -> None:
    # the documented limit: callers check what they reconstruct (public key, commitment)
    secret, shares = _share()
    subset = {x: shares[x] for x in POINTS[:4]}
    subset[2] = bytes(shamir.SHARE_BYTES - 1) + b"\x05"
    try:
        recovered = shamir.reconstruct(subset, threshold=4)
    except shamir.InconsistentShares:
        return  # interpolated outside 32 bytes: also caught
    assert recovered != secret


def test_malformed_shares_are_refused() -> None:
    _, shares = _share()
    short = dict(shares)
    short[1] = shares[1][:-1]
    with pytest.raises(ValueError, match="66 bytes"):
        shamir.reconstruct(short, threshold=4)
    outside = dict(shares)
    outside[1] = b"\xff" * shamir.SHARE_BYTES
    with pytest.raises(ValueError, match="field element"):
        shamir.reconstruct(outside, threshold=4)


@pytest.mark.parametrize(
    ("secret", "xs", "threshold", "message"),
    [
        (bytes(31), [1, 2], 2, "32 bytes"),
        (bytes(32), [1, 1], 2, "distinct"),
        (bytes(32), [0, 1], 2, "distinct"),
        (bytes(32), [1, 2], 3, "threshold"),
        (bytes(32), [1, 2], 0, "threshold"),
    ],
)
def test_split_validates_its_arguments(
    secret: bytes, xs: list[int], threshold: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        shamir.split(secret, xs=xs, threshold=threshold)


def test_shares_are_fresh_each_time() -> None:
    secret = bytes(32)
    first = shamir.split(secret, xs=POINTS, threshold=3)
    second = shamir.split(secret, xs=POINTS, threshold=3)
    assert first[1] != second[1]
    assert shamir.reconstruct(first, threshold=3) == shamir.reconstruct(second, threshold=3)
