"""The end-to-end and fault tests' coordinator: a real ``fedrec serve`` process on
127.0.0.1 (:class:`fedrec.local_server.CoordinatorProcess`) with the tests' admin token
and a fast deadline timer."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, select, update

from coordinator.store.models import Blob, BlobChunk
from fedrec.local_server import CoordinatorProcess

__all__ = ["ADMIN_TOKEN", "ServerProcess"]

ADMIN_TOKEN = "fra_e2e-admin-token-0123456789abcdef0123456789abcdef"


class ServerProcess(CoordinatorProcess):
    """One coordinator process; ``kill()`` is SIGKILL, ``start()`` brings it back.

    ``extra_env`` adds or overrides ``FEDREC_*`` settings.
    """

    def __init__(self, data_dir: Path, database_url: str | None = None, **extra_env: str) -> None:
        super().__init__(
            data_dir,
            database_url,
            admin_token=ADMIN_TOKEN,
            secret_key="e2e-secret",
            env={"FEDREC_TIMER_INTERVAL_SECONDS": "0.2", **extra_env},
        )

    @property
    def database_url(self) -> str:
        default = f"sqlite:///{(self.data_dir / 'fedrec.db').resolve()}"
        return self.env.get("FEDREC_DATABASE_URL", default)

    def tamper_blob(self, digest: str) -> None:
        """Flip the last byte of a stored blob: its file, or (a small blob, kept in the
        database by the server) its row's bytes. The server should be stopped."""
        path = self.data_dir / "blobs" / digest[:2] / digest
        if path.exists():
            data = path.read_bytes()
            path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
            return
        engine = create_engine(self.database_url)
        try:
            with engine.begin() as conn:
                # in the blob's row (one chunk at most), else its first chunk
                own = Blob.digest == digest
                inline = conn.execute(select(Blob.data).where(own)).scalar_one()
                if inline is not None:
                    conn.execute(update(Blob).where(own).values(data=_flip(inline)))
                    return
                key = (BlobChunk.digest == digest) & (BlobChunk.seq == 0)
                data = conn.execute(select(BlobChunk.data).where(key)).scalar_one()
                conn.execute(update(BlobChunk).where(key).values(data=_flip(data)))
        finally:
            engine.dispose()


def _flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])
