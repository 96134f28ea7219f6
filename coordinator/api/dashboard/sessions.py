"""Dashboard sign-in sessions: a stateless signed cookie and the CSRF token derived from it.

The cookie holds the keyed hash of the token the browser signed in with (never the token
itself), a random nonce and an expiry, signed with a key derived from the coordinator's
secret. Each request resolves the hash again, so revoking or re-enrolling a participant, or
changing the admin token, ends its sessions at once. The CSRF token is an HMAC of the
nonce: a page receives it in its forms, a cross-site attacker cannot compute it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

__all__ = ["COOKIE_NAME", "SESSION_SECONDS", "DashboardSession", "SessionSigner"]

COOKIE_NAME = "fedrec_session"
SESSION_SECONDS = 8 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class DashboardSession:
    token_hash: str
    nonce: str
    expires_at: int


class SessionSigner:
    """Issues and verifies session cookies and CSRF tokens with one derived key."""

    def __init__(self, secret_key: bytes) -> None:
        # a key of its own: a cookie signature is never valid as any other HMAC of the secret
        self._key = hmac.new(secret_key, b"fedrec dashboard session v1", hashlib.sha256).digest()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, token_hash: str, *, now: float | None = None) -> tuple[str, DashboardSession]:
        """A new session for a token hash: the cookie value and what it carries."""
        session = DashboardSession(
            token_hash=token_hash,
            nonce=secrets.token_hex(16),
            expires_at=int((now if now is not None else time.time()) + SESSION_SECONDS),
        )
        body = {"h": session.token_hash, "n": session.nonce, "e": session.expires_at}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, cookie: str | None, *, now: float | None = None) -> DashboardSession | None:
        """The session a cookie carries; None if it is absent, tampered with or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            session = DashboardSession(str(body["h"]), str(body["n"]), int(body["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires_at <= (now if now is not None else time.time()):
            return None
        return session

    def csrf_token(self, session: DashboardSession) -> str:
        return _b64(hmac.new(self._key, b"csrf:" + session.nonce.encode(), hashlib.sha256).digest())

    def csrf_ok(self, session: DashboardSession, submitted: str | None) -> bool:
        return bool(submitted) and hmac.compare_digest(str(submitted), self.csrf_token(session))
