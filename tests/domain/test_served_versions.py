"""Weights downloads cached per process: records per (federation, number), bytes per
sha256, bounded; a cached record still refuses another federation's participant."""

from __future__ import annotations

import pytest

from coordinator.domain.errors import ValidationFailed
from coordinator.domain.served_versions import ServedVersion, ServedVersions


def _served(number: int = 3) -> ServedVersion:
    return ServedVersion(
        version=number,
        blobs={"float32": ("a" * 64, 10), "float16": ("b" * 64, 5)},
        default_encoding="float16",
        manifest=None,
        signature=None,
    )


def test_an_encoding_not_served_is_a_422_naming_the_offered_ones() -> None:
    with pytest.raises(ValidationFailed) as caught:
        _served().blob("int8")
    assert "float32, float16" in caught.value.detail


def test_bytes_are_read_once_and_bounded_in_total() -> None:
    cache = ServedVersions(max_bytes=40)
    reads: list[str] = []

    def read(sha256: str) -> bytes:
        reads.append(sha256)
        return sha256.encode() * 5  # 10 bytes

    for _ in range(3):
        assert cache.weights("aa", read) == b"aa" * 5
    assert reads == ["aa"]
    for key in ("bb", "cc", "dd", "ee"):  # 50 bytes in all: the oldest ("aa") goes
        cache.weights(key, read)
    cache.weights("aa", read)
    assert reads.count("aa") == 2


def test_bytes_larger_than_a_quarter_of_the_budget_are_not_kept() -> None:
    cache = ServedVersions(max_bytes=16)
    reads: list[str] = []

    def read(sha256: str) -> bytes:
        reads.append(sha256)
        return b"x" * 5

    cache.weights("big", read)
    cache.weights("big", read)
    assert reads == ["big", "big"]


def test_records_are_bounded() -> None:
    cache = ServedVersions(max_records=2)
    for number in (1, 2, 3):
        cache.remember("f", _served(number))
    assert cache.record("f", 1) is None
    assert cache.record("f", 3) == _served(3)
