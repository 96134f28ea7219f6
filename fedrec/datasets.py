"""Fetch public datasets into a local cache, verified by checksum.

MovieLens 100K may not be redistributed, so fedrec never ships it: it is downloaded
from GroupLens into a cache folder on the user's machine, and its ``u.data`` is
checked against the sha256 of the published file before use.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import httpx

__all__ = [
    "ML100K_UDATA_SHA256",
    "ML100K_URL",
    "DatasetUnavailable",
    "default_cache_dir",
    "fetch_movielens_100k",
    "find_movielens_100k",
]

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_UDATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"


class DatasetUnavailable(RuntimeError):
    """The dataset is neither cached nor downloadable; the message says where to put it."""


def default_cache_dir() -> Path:
    base = os.environ.get("FEDREC_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "fedrec" if base else Path.home() / ".cache" / "fedrec"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_movielens_100k(path: str | Path) -> Path:
    """The ``ml-100k`` folder at ``path`` (or its ``u.data``), checked by sha256."""
    folder = Path(path)
    if folder.name == "u.data":
        folder = folder.parent
    udata = folder / "u.data"
    if not udata.is_file():
        raise DatasetUnavailable(f"no MovieLens 100K 'u.data' in {folder}")
    actual = _sha256(udata)
    if actual != ML100K_UDATA_SHA256:
        raise DatasetUnavailable(
            f"{udata} has sha256 {actual}, not the published {ML100K_UDATA_SHA256}"
        )
    return folder


def fetch_movielens_100k(
    cache_dir: str | Path | None = None, *, url: str | None = None, timeout: float = 30.0
) -> Path:
    """Return the cached ``ml-100k`` folder, downloading and verifying it if needed.

    The cache is ``$FEDREC_CACHE_DIR`` (else ``~/.cache/fedrec``); ``$FEDREC_ML100K_URL``
    overrides the download address (a mirror).
    """
    url = url or os.environ.get("FEDREC_ML100K_URL") or ML100K_URL
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "ml-100k"
    if (folder / "u.data").is_file():
        return find_movielens_100k(folder)
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise DatasetUnavailable(
            f"could not download MovieLens 100K from {url} ({exc}); download ml-100k.zip "
            f"yourself, unzip it and pass its folder with --data, or place it at {folder}"
        ) from exc
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        members = [
            m for m in archive.namelist() if m.startswith("ml-100k/") and not m.endswith("/")
        ]
        root.mkdir(parents=True, exist_ok=True)
        staging = root / ".ml-100k.partial"
        staging.mkdir(exist_ok=True)
        for member in members:
            name = Path(member).name
            if not name or "/" in name or name.startswith("."):
                continue
            (staging / name).write_bytes(archive.read(member))
    find_movielens_100k(staging)  # verify before it becomes visible in the cache
    staging.rename(folder)
    return folder
