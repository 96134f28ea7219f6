"""First start: data folder, generated secrets (mode 0600), database migrations."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from coordinator.config import Settings

__all__ = ["Secrets", "load_secrets"]


@dataclass(frozen=True)
class Secrets:
    admin_token: str
    secret_key: bytes
    admin_token_file: Path | None
    admin_token_created: bool


def _read_or_create(path: Path, make: str) -> tuple[str, bool]:
    """Read a secret file, or create it atomically with owner-only permissions."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as handle:
        handle.write(make + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return make, True


def load_secrets(settings: Settings) -> Secrets:
    """The admin token and the token-hash key, from settings or generated files."""
    # owner-only: it holds the SQLite database, the blobs and the generated secrets
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if settings.secret_key is not None:
        secret_key = settings.secret_key.get_secret_value()
    else:
        secret_key, _ = _read_or_create(settings.data_dir / "secret_key", secrets.token_hex(32))
    if settings.admin_token is not None:
        return Secrets(settings.admin_token.get_secret_value(), secret_key.encode(), None, False)
    token_file = settings.data_dir / "admin_token"
    token, created = _read_or_create(token_file, f"fra_{secrets.token_urlsafe(32)}")
    return Secrets(token, secret_key.encode(), token_file, created)
