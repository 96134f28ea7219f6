"""Fixtures of the store tests: an S3 API server (moto, on 127.0.0.1) for the s3 blob store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3_server import moto_s3_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url
