"""The ``s3`` blob store: blobs as objects of an S3 bucket (AWS S3 or any S3 API server).

Objects are named ``<prefix><sha[:2]>/<sha>``. Each blob also has a row in the database's
``blobs`` table (coordinator/store/blob_index.py), which the collector scans and locks: S3
cannot remove an object "unless it was written again meanwhile", the row lock can. A
store commits the row first, then PUTs the object, so a crash in between leaves a row
without an object, which the collector removes like any orphan, never an object no row
knows.

Durability: S3 answers a PUT only once the object is stored durably, and reads after it
see it (strong read-after-write consistency). The PUT carries the sha256 of the bytes
(``ChecksumSHA256``), so the server refuses bytes damaged on the way.

boto3 is imported here only, from the ``s3`` extra (``pip install 'fedrec[s3]'``).
Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
a profile, an instance role), never from fedrec's settings.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from coordinator.store import blob_index
from coordinator.store.blobs import BlobEntry, BlobNotFound, check_digest, sha256_hex

__all__ = ["S3BlobStore", "s3_client"]

_MISSING = {"404", "NoSuchKey", "NotFound"}


def s3_client(*, endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 S3 client with standard retries; explains a missing ``s3`` extra."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise RuntimeError(
            f"FEDREC_BLOB_STORE=s3 needs the s3 extra: pip install 'fedrec[s3]' ({exc})"
        ) from exc
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(retries={"mode": "standard", "max_attempts": 5}),
    )


class S3BlobStore:
    """Blobs as objects of ``bucket`` under ``prefix``, indexed in the ``blobs`` table."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        sessions: sessionmaker[Session],
        read_sessions: sessionmaker[Session],
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._sessions = sessions
        self._read_sessions = read_sessions

    def describe(self) -> str:
        endpoint = self._client.meta.endpoint_url
        return f"s3://{self._bucket}/{self._prefix} at {endpoint} (indexed in table blobs)"

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self._bucket)
        except Exception as exc:  # botocore's errors: any of them means "not usable now"
            raise OSError(f"bucket {self._bucket} unreachable: {type(exc).__name__}") from exc

    def key(self, digest: str) -> str:
        check_digest(digest)
        return f"{self._prefix}{digest[:2]}/{digest}"

    def put(self, data: bytes, digest: str | None = None) -> str:
        digest = check_digest(digest or sha256_hex(data))
        with self._sessions.begin() as session:
            known = blob_index.refresh(session, digest)
            if not known and not blob_index.register(session, digest, len(data)):
                known = blob_index.refresh(session, digest)  # a concurrent store came first
        # the committed row is fresh now: the collector keeps the object for its grace period
        if known and self._stored_size(digest) == len(data):
            return digest
        self._client.put_object(
            Bucket=self._bucket,
            Key=self.key(digest),
            Body=data,
            ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode("ascii"),
            ContentType="application/octet-stream",
        )
        return digest

    def get(self, digest: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self.key(digest))
        except Exception as exc:
            if _is_missing(exc):
                raise BlobNotFound(digest) from exc
            raise
        body = response["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def get_each(self, digests: Sequence[str]) -> Iterator[bytes]:
        for digest in digests:
            yield self.get(digest)

    def exists(self, digest: str) -> bool:
        return self._stored_size(digest) is not None

    def scan(self) -> Iterator[BlobEntry]:
        location = f"s3://{self._bucket}/{self._prefix}{{digest}}"
        return blob_index.scan_index(self._read_sessions, location)

    def remove(self, digest: str) -> None:
        with self._sessions.begin() as session:
            self._client.delete_object(Bucket=self._bucket, Key=self.key(digest))
            blob_index.forget(session, digest)

    def remove_stale(self, item: BlobEntry, older_than: float) -> bool:
        if item.digest is None:
            return False  # S3 writes are atomic: no partial objects to clean up
        with self._sessions.begin() as session:
            # the row lock makes a concurrent store wait until the object is gone, and
            # then write it again
            if not blob_index.lock_if_stale(session, item.digest, older_than):
                return False
            self._client.delete_object(Bucket=self._bucket, Key=self.key(item.digest))
            blob_index.forget(session, item.digest)
        return True

    def _stored_size(self, digest: str) -> int | None:
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=self.key(digest))
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise
        return int(head["ContentLength"])


def _is_missing(exc: Exception) -> bool:
    """Whether a botocore ``ClientError`` says the object does not exist."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    return str(response.get("Error", {}).get("Code")) in _MISSING
