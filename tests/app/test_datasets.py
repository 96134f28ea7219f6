"""Downloading MovieLens 100K into the cache, verified by checksum (served from 127.0.0.1)."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fedrec.datasets import (
    DatasetUnavailable,
    fetch_movielens_100k,
    find_movielens_100k,
)
from tests.datasets import ML100K_DIR


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"ml-100k/{name}", data)
    return buffer.getvalue()


@pytest.fixture
def serve() -> Iterator[dict[str, object]]:
    """A tiny HTTP server on 127.0.0.1 whose one resource the test sets."""
    state: dict[str, object] = {"body": b"", "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state["hits"] = int(state["hits"]) + 1  # type: ignore[call-overload]
            body = state["body"]
            assert isinstance(body, bytes)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/ml-100k.zip"
    yield state
    server.shutdown()
    server.server_close()


def test_tampered_download_is_rejected_and_not_cached(serve: dict, tmp_path: Path) -> None:
    serve["body"] = _zip({"u.data": b"1\t1\t5\t881250949\n"})
    with pytest.raises(DatasetUnavailable, match="sha256"):
        fetch_movielens_100k(tmp_path, url=str(serve["url"]))
    assert not (tmp_path / "ml-100k").exists()


def test_unreachable_download_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="--data"):
        fetch_movielens_100k(tmp_path, url="http://127.0.0.1:9/ml-100k.zip", timeout=2)


@pytest.mark.skipif(ML100K_DIR is None, reason="MovieLens 100K not found (FEDREC_ML100K_DIR)")
def test_genuine_download_is_verified_and_cached(serve: dict, tmp_path: Path) -> None:
    assert ML100K_DIR is not None
    serve["body"] = _zip({"u.data": (ML100K_DIR / "u.data").read_bytes()})
    folder = fetch_movielens_100k(tmp_path, url=str(serve["url"]))
    assert folder == tmp_path / "ml-100k"
    assert find_movielens_100k(folder) == folder
    # second call: served from the cache, no download
    assert fetch_movielens_100k(tmp_path, url=str(serve["url"])) == folder
    assert serve["hits"] == 1
