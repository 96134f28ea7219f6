"""First start: data folder, generated secrets (mode 0600), database migrations."""

from __future__ import annotations

import hmac
import math
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm

from coordinator.config import Environment, Settings
from coordinator.domain.signing import LineageSigner, generate_signing_key_pem

__all__ = [
    "InsecureSettingsError",
    "Secrets",
    "check_production",
    "load_secrets",
    "load_signer",
    "token_strength_bits",
]

# secrets that are someone's example, never a deployment's own
_DEFAULT_SECRETS = frozenset(
    {"", "changeme", "change-me", "changethis", "secret", "password", "admin", "test", "default"}
)
MIN_SECRET_CHARS = 32
MIN_TOKEN_BITS = 128.0


@dataclass(frozen=True)
class Secrets:
    admin_token: str
    secret_key: bytes
    admin_token_file: Path | None
    admin_token_created: bool
    audit_key: bytes


class InsecureSettingsError(RuntimeError):
    """``environment=production`` with a setting an attacker could guess or abuse."""


def token_strength_bits(token: str) -> float:
    """A conservative entropy estimate: length times the Shannon entropy of its
    characters. Repeats and small alphabets score low; 43 urlsafe-random chars ~ 220."""
    if not token:
        return 0.0
    counts = [token.count(c) for c in set(token)]
    return -sum(n * math.log2(n / len(token)) for n in counts)


def check_production(settings: Settings, loaded: Secrets) -> None:
    """Refuse to start in production with a weak admin token or an empty, default or short
    secret key, or with test hooks enabled; the message says what to change."""
    if settings.environment != Environment.production:
        return
    problems = []
    token = loaded.admin_token
    if len(token) < MIN_SECRET_CHARS or token_strength_bits(token) < MIN_TOKEN_BITS:
        problems.append(
            f"the admin token is weak ({len(token)} chars, ~{token_strength_bits(token):.0f} "
            f"bits; need >= {MIN_SECRET_CHARS} chars and ~{MIN_TOKEN_BITS:.0f} bits): unset "
            "FEDREC_ADMIN_TOKEN to have one generated, or set one from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    key = loaded.secret_key.decode()
    if key.strip().lower() in _DEFAULT_SECRETS or len(key) < MIN_SECRET_CHARS:
        problems.append(
            f"the secret key (FEDREC_SECRET_KEY or data_dir/secret_key) is empty, a default "
            f"or shorter than {MIN_SECRET_CHARS} chars: unset it to have one generated, or "
            "set a random one"
        )
    elif hmac.compare_digest(key, token):
        problems.append("the secret key equals the admin token: they must be different secrets")
    audit = loaded.audit_key.decode()
    if audit.strip().lower() in _DEFAULT_SECRETS or len(audit) < MIN_SECRET_CHARS:
        problems.append(
            "the audit key (FEDREC_AUDIT_KEY or data_dir/audit_key) is empty, a default or "
            f"shorter than {MIN_SECRET_CHARS} chars: unset it to have one generated"
        )
    elif hmac.compare_digest(audit, key):
        problems.append("the audit key equals the secret key: they must be different secrets")
    for hook in (
        "FEDREC_TEST_AGGREGATION_PAUSE_SECONDS",
        "FEDREC_TEST_GROUP_COMMIT_PAUSE_SECONDS",
        "FEDREC_TEST_EASE_CHILD_PAUSE_SECONDS",
    ):
        if os.environ.get(hook):
            problems.append(f"{hook} is a test hook: unset it")
    if problems:
        raise InsecureSettingsError(
            "refusing to start with environment=production:\n  - " + "\n  - ".join(problems)
        )


def _read_or_create(path: Path, make: str) -> tuple[str, bool]:
    """Read a secret file, or create it with owner-only permissions.

    The content is written to a private temporary file first and then linked into
    place, so a process starting at the same moment (replicas sharing ``data_dir``)
    either finds the complete file or creates it, never reads it half-written.
    """
    if path.exists():
        return path.read_text().strip(), False
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(make + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)  # fails if another process linked its file first
        except FileExistsError:
            return path.read_text().strip(), False
    finally:
        os.unlink(temp)
    return make, True


def load_secrets(settings: Settings) -> Secrets:
    """The admin token, the token-hash key and the audit key, from settings or generated
    files (each its own secret)."""
    # owner-only: it holds the SQLite database, the blobs and the generated secrets
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if settings.secret_key is not None:
        secret_key = settings.secret_key.get_secret_value()
    else:
        secret_key, _ = _read_or_create(settings.data_dir / "secret_key", secrets.token_hex(32))
    if settings.audit_key is not None:
        audit_key = settings.audit_key.get_secret_value()
    else:
        audit_key, _ = _read_or_create(settings.data_dir / "audit_key", secrets.token_hex(32))
    if settings.admin_token is not None:
        token = settings.admin_token.get_secret_value()
        return Secrets(token, secret_key.encode(), None, False, audit_key.encode())
    token_file = settings.data_dir / "admin_token"
    token, created = _read_or_create(token_file, f"fra_{secrets.token_urlsafe(32)}")
    return Secrets(token, secret_key.encode(), token_file, created, audit_key.encode())


def load_signer(settings: Settings) -> LineageSigner:
    """The lineage signing key: configured (PEM text or file), or generated once into
    ``data_dir/signing_key.pem`` (0600) and shared by every process using that folder."""
    if settings.signing_key is not None:
        pem = settings.signing_key.get_secret_value().encode()
    else:
        path = settings.signing_key_file
        if path is None:
            settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = settings.data_dir / "signing_key.pem"
            _read_or_create(path, generate_signing_key_pem().decode().strip())
        pem = path.read_bytes()
    try:
        return LineageSigner.from_pem(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SystemExit(f"fedrec: the lineage signing key cannot be loaded: {exc}") from exc
