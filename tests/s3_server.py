"""An S3 API server for the tests: moto's server mode, on 127.0.0.1, in this process.

No real S3 (nor MinIO) can run here, so the ``s3`` blob store is tested against moto,
which implements the S3 REST API the store uses (PUT with a sha256 checksum, GET, HEAD,
DELETE). It is a stand-in: it proves the store speaks the API, not how a given S3
service behaves under load or failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from fedrec.local_server import free_port

__all__ = ["S3_ENV", "moto_s3_server", "new_bucket"]

# moto accepts any credentials; boto3 needs some to sign requests
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Start moto's S3 server on a free 127.0.0.1 port; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def new_bucket(endpoint_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """A fresh bucket on the server, with the AWS environment boto3 needs; (name, client)."""
    from coordinator.store.s3_blobs import s3_client

    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    client = s3_client(endpoint_url=endpoint_url, region="us-east-1")
    bucket = f"fedrec-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return bucket, client
