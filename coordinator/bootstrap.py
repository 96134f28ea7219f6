"""First start: data folder, generated secrets (mode 0600), database migrations."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm

from coordinator.config import Settings
from coordinator.domain.signing import LineageSigner, generate_signing_key_pem

__all__ = ["Secrets", "load_secrets", "load_signer"]


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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.secret_key is not None:
        secret_key = settings.secret_key.get_secret_value()
    else:
        secret_key, _ = _read_or_create(settings.data_dir / "secret_key", secrets.token_hex(32))
    if settings.admin_token is not None:
        return Secrets(settings.admin_token.get_secret_value(), secret_key.encode(), None, False)
    token_file = settings.data_dir / "admin_token"
    token, created = _read_or_create(token_file, f"fra_{secrets.token_urlsafe(32)}")
    return Secrets(token, secret_key.encode(), token_file, created)


def load_signer(settings: Settings) -> LineageSigner:
    """The lineage signing key: configured (PEM text or file), or generated once into
    ``data_dir/signing_key.pem`` (0600) and shared by every process using that folder."""
    if settings.signing_key is not None:
        pem = settings.signing_key.get_secret_value().encode()
    else:
        path = settings.signing_key_file
        if path is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            path = settings.data_dir / "signing_key.pem"
            _read_or_create(path, generate_signing_key_pem().decode().strip())
        pem = path.read_bytes()
    try:
        return LineageSigner.from_pem(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SystemExit(f"fedrec: the lineage signing key cannot be loaded: {exc}") from exc
