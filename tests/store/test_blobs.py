"""The content-addressed blob store."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from coordinator.store.blobs import BlobEntry, BlobNotFound
from coordinator.store.local_blobs import LocalBlobStore


def test_put_get_roundtrip(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert store.get(digest) == b"hello"
    assert store.path(digest).parent.name == digest[:2]


def test_put_is_idempotent_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put(b"x" * 1000)
    store.put(b"x" * 1000)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1
    assert not files[0].name.startswith(".tmp-")


def test_missing_blob(tmp_path: Path) -> None:
    with pytest.raises(BlobNotFound):
        LocalBlobStore(tmp_path).get("0" * 64)


def test_rejects_path_traversal(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        LocalBlobStore(tmp_path).path("../../etc/passwd")


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _old_blob(store: LocalBlobStore, data: bytes) -> tuple[str, BlobEntry]:
    """Store ``data``, make it an hour old; its digest and what the collector's scan sees."""
    digest = store.put(data)
    _age(store.path(digest), 3600)
    (item,) = store.scan()
    return digest, item


def test_storing_an_existing_blob_refreshes_its_time(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"weights")
    _age(store.path(digest), 3600)
    store.put(b"weights")
    assert store.path(digest).stat().st_mtime > time.time() - 60


def test_scan_lists_blobs_and_leftover_temp_files_only(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"a")
    (store.path(digest).parent / ".tmp-crashed").write_bytes(b"half")
    (store.path(digest).parent / "README").write_text("not a blob")
    (tmp_path / "stray.txt").write_text("not in a fan-out folder")
    found = {(Path(item.location).name, item.digest, item.size) for item in store.scan()}
    assert found == {(digest, digest, 1), (".tmp-crashed", None, 4)}


def test_remove_stale_removes_an_old_blob(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest, item = _old_blob(store, b"orphan")
    assert store.remove_stale(item, older_than=time.time() - 60)
    assert not store.exists(digest)
    assert list(store.scan()) == []  # no trash left behind


def test_remove_stale_keeps_a_blob_stored_again_meanwhile(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest, item = _old_blob(store, b"orphan, then uploaded again")  # the collector saw it old ...
    store.put(b"orphan, then uploaded again")  # ... a request stores the same bytes ...
    assert not store.remove_stale(item, older_than=time.time() - 60)  # ... it stays
    assert store.get(digest) == b"orphan, then uploaded again"


def test_put_rewrites_a_blob_the_collector_took(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest, item = _old_blob(store, b"bytes")
    assert store.remove_stale(item, older_than=time.time() - 60)
    assert store.put(b"bytes") == digest
    assert store.get(digest) == b"bytes"
