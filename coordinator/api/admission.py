"""Admission: who is calling is settled before any body is read.

For every HTTP request, before the app sees it (the front door, api/front_door.py, asks):

- a bearer token is authenticated (on a worker thread; the route reuses the principal);
- a participant token spends from its own bucket (the admin token is not limited);
- a request without a valid token spends from its client address's bucket, and its body
  may be at most ``anonymous_max_body_bytes``: a larger declared length is refused
  before a byte is read, a longer stream as soon as it passes the limit;
- each guessed token (one nobody holds; revoked and expired tokens are real) spends from
  the address's auth-failure bucket, the smallest: once empty, tokens from that address
  are not even checked until it refills, except tokens that already authenticated in
  this process (their holders may share the guesser's NAT).

Refusals are 429 problem+json with ``Retry-After``. ``/healthz`` and ``/readyz`` are
never throttled (orchestrator probes). Counters are per process (rate_limits.py).
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Sequence
from enum import Enum
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api.long_poll_starts import LongPollStarts
from coordinator.api.problems import problem_response
from coordinator.api.rate_limits import TokenBuckets, client_address
from coordinator.domain.auth import (
    Principal,
    authenticate,
    cached_principal_for_hash,
    hash_token,
)
from coordinator.domain.context import Context
from coordinator.domain.errors import (
    CoordinatorError,
    DatabaseError,
    ParticipantRevoked,
    TokenExpired,
    TokenRevoked,
    Unauthorized,
    database_problem,
)

__all__ = ["AdmissionControl", "Verdict"]

UNTHROTTLED_PATHS = frozenset({"/healthz", "/readyz"})
MAX_REMEMBERED_TOKENS = 100_000


class _AnonymousBodyTooLarge(Exception):
    pass


class Verdict(Enum):
    """What admission control decided for a request."""

    REFUSED = "refused"  # it answered (429, or 413 before a byte of the body was read)
    AUTHENTICATED = "authenticated"  # scope["state"]["principal"] holds the caller
    ANONYMOUS = "anonymous"  # no valid token: its body is limited (call_anonymous)
    UNTHROTTLED = "unthrottled"  # a probe path: neither authenticated nor limited


class AdmissionControl:
    """Run by the front door (api/front_door.py) for every HTTP request, after overload
    shedding and before the body is read."""

    def __init__(
        self,
        *,
        context: Context,
        anonymous_max_body_bytes: int,
        per_token: TokenBuckets,
        per_address: TokenBuckets,
        auth_failures: TokenBuckets,
        trusted_proxies: Sequence[str] = (),
        scrape_token: str | None = None,
        long_poll_starts: LongPollStarts | None = None,
    ) -> None:
        # the authentication of long-polls, bounded (FEDREC_MAX_LONG_POLL_STARTS)
        self.long_poll_starts = long_poll_starts or LongPollStarts(0)
        self.ctx = context
        self.anonymous_max_body_bytes = anonymous_max_body_bytes
        self.per_token = per_token
        self.per_address = per_address
        self.auth_failures = auth_failures
        self.trusted_proxies = tuple(trusted_proxies)
        self.scrape_token = scrape_token
        # hashes of tokens that authenticated in this process: a throttled address (a NAT a
        # guesser shares) still lets their holders in
        self._valid_hashes: OrderedDict[str, None] = OrderedDict()

    async def admit(self, scope: Scope, receive: Receive, send: Send) -> Verdict:
        """Settle who is calling; answer (and say REFUSED) if the caller is throttled."""
        if scope["path"] in UNTHROTTLED_PATHS:
            return Verdict.UNTHROTTLED
        address = client_address(scope, self.trusted_proxies)
        token = _bearer_token(scope)
        principal: Principal | None = None
        if token is not None and self._is_scrape_token(token):
            token = None  # not a principal, not a failure: /metrics checks it (per address)
        if token is not None:
            wait = self.auth_failures.retry_after(address)
            if wait and not self._known(token):
                detail = (
                    f"too many failed authentications from {address}; "
                    f"retry in {wait} s with a valid token"
                )
                await self._too_many(scope, receive, send, wait, detail)
                return Verdict.REFUSED
            # a token this process authenticated moments ago: no thread, no database
            digest = hash_token(self.ctx.secret_key, token)
            principal, guessed = cached_principal_for_hash(self.ctx, digest), False
            if principal is not None:
                self._remember_hash(digest)
            else:
                answer = await self.long_poll_starts.run(
                    scope, receive, send, self._authenticate, token
                )
                if answer is None:
                    return Verdict.REFUSED  # past FEDREC_MAX_LONG_POLL_STARTS: answered 503
                principal, guessed = answer
            if guessed:
                self.auth_failures.take(address)
                if wait:  # a known token no longer valid, from a throttled address
                    detail = f"too many failed authentications from {address}; retry in {wait} s"
                    await self._too_many(scope, receive, send, wait, detail)
                    return Verdict.REFUSED
        if principal is not None:
            # the route's dependency and the idempotency layer reuse it
            scope.setdefault("state", {})["principal"] = principal
            if principal.participant_id is not None:
                wait = self.per_token.take(principal.participant_id)
                if wait:
                    detail = (
                        "this participant token sent more than "
                        f"{self.per_token.rate:g} requests/s (burst {self.per_token.burst}); "
                        f"retry in {wait} s"
                    )
                    await self._too_many(scope, receive, send, wait, detail)
                    return Verdict.REFUSED
            return Verdict.AUTHENTICATED
        wait = self.per_address.take(address)
        if wait:
            detail = (
                f"{address} sent more than {self.per_address.rate:g} requests/s without a "
                f"valid token; retry in {wait} s, or authenticate"
            )
            await self._too_many(scope, receive, send, wait, detail)
            return Verdict.REFUSED
        return Verdict.ANONYMOUS

    async def call_anonymous(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Pass an unauthenticated request on to ``app`` with its body limited to a few
        kilobytes."""
        limit = self.anonymous_max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._body_too_large(scope, receive, send)
            return
        received = 0
        too_large = False
        answered = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _AnonymousBodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if too_large:
                # FastAPI turns a failed body read into its own 400: answer 413 instead
                if not answered and message["type"] == "http.response.start":
                    answered = True
                    await self._body_too_large(scope, receive, send)
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, limited_receive, guarded_send)
        except _AnonymousBodyTooLarge:
            pass
        if too_large and not answered:
            await self._body_too_large(scope, receive, send)

    def _is_scrape_token(self, token: str) -> bool:
        return self.scrape_token is not None and hmac.compare_digest(
            token.encode(), self.scrape_token.encode()
        )

    def _known(self, token: str) -> bool:
        return hash_token(self.ctx.secret_key, token) in self._valid_hashes

    def _authenticate(self, token: str) -> tuple[Principal | None, bool]:
        """The token's principal (None: the app answers), and whether it was a guess: a
        token nobody holds. Revoked and expired tokens are real, not guesses."""
        try:
            # the app authenticates a refused token again and records the failure once
            principal = authenticate(self.ctx, token, audit_failure=False)
        except (ParticipantRevoked, TokenExpired, TokenRevoked):
            return None, False
        except Unauthorized:
            return None, True
        except CoordinatorError:
            return None, False  # e.g. a busy database: the app answers it
        except DatabaseError as exc:
            # a locked or unreachable database (registering the bootstrap token writes):
            # the app authenticates again and its handler answers 503 with Retry-After
            if database_problem(exc) is None:
                raise
            return None, False
        self._remember(token)
        return principal, False

    def _remember(self, token: str) -> None:
        """A valid token: its address's failed guesses do not lock it out."""
        self._remember_hash(hash_token(self.ctx.secret_key, token))

    def _remember_hash(self, digest: str) -> None:
        self._valid_hashes[digest] = None
        self._valid_hashes.move_to_end(digest)
        if len(self._valid_hashes) > MAX_REMEMBERED_TOKENS:
            self._valid_hashes.popitem(last=False)

    async def _body_too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _problem(
            scope,
            status=413,
            slug="payload-too-large",
            title="Payload too large",
            detail=f"requests without a valid token may carry at most "
            f"{self.anonymous_max_body_bytes} bytes (FEDREC_ANONYMOUS_MAX_BODY_BYTES); "
            "send 'Authorization: Bearer <token>'",
            headers={"Connection": "close"},
        )(scope, receive, send)

    async def _too_many(
        self, scope: Scope, receive: Receive, send: Send, wait: int, detail: str
    ) -> None:
        await _problem(
            scope,
            status=429,
            slug="too-many-requests",
            title="Too many requests",
            detail=detail,
            headers={"Retry-After": str(wait)},
        )(scope, receive, send)


def _problem(scope: Scope, **fields: Any) -> Any:
    return problem_response(None, instance=scope.get("path"), **fields)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return bytes(value)
    return None


def _bearer_token(scope: Scope) -> str | None:
    scheme, _, token = (_header(scope, b"authorization") or b"").decode("latin-1").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
