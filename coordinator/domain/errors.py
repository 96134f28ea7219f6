"""Domain errors: one root, each subclass carries its HTTP status and problem slug.

The API layer renders every subclass as RFC 9457 ``application/problem+json``
with ``type = urn:fedrec:problem:<slug>``; ``extra`` becomes extension members.
"""

from __future__ import annotations

from typing import Any, ClassVar

from coordinator.store.errors import DatabaseError, is_conflict, is_retryable

__all__ = [
    "CoordinatorError",
    "Conflict",
    "DatabaseError",
    "FederationCompleted",
    "Forbidden",
    "FutureRound",
    "IdempotencyKeyReused",
    "InvalidUpdate",
    "LastAdminToken",
    "NoUpdates",
    "NonFiniteAggregate",
    "NotFound",
    "ParticipantRevoked",
    "PayloadTooLarge",
    "RequestInProgress",
    "RoundClosed",
    "RoundNotOpen",
    "ServiceUnavailable",
    "TokenExpired",
    "TokenRevoked",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpdateConflict",
    "ValidationFailed",
    "database_problem",
]


class CoordinatorError(Exception):
    status_code: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class Unauthorized(CoordinatorError):
    status_code = 401
    slug = "unauthorized"
    title = "Unauthorized"


class TokenExpired(Unauthorized):
    slug = "token-expired"
    title = "Token expired"


class TokenRevoked(Unauthorized):
    slug = "token-revoked"
    title = "Token revoked"


class ParticipantRevoked(Unauthorized):
    slug = "participant-revoked"
    title = "Participant revoked"


class Forbidden(CoordinatorError):
    status_code = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(CoordinatorError):
    status_code = 404
    slug = "not-found"
    title = "Not found"

    def __init__(self, detail: str, *, slug: str | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        if slug:
            self.slug = slug  # type: ignore[misc]


class Conflict(CoordinatorError):
    status_code = 409
    slug = "conflict"
    title = "Conflict"


class RoundClosed(Conflict):
    slug = "round-closed"
    title = "Round closed"


class FutureRound(Conflict):
    slug = "future-round"
    title = "Round not open yet"


class UpdateConflict(Conflict):
    slug = "update-conflict"
    title = "A different update was already accepted"


class RoundNotOpen(Conflict):
    slug = "round-not-open"
    title = "Round not open"


class NoUpdates(Conflict):
    slug = "no-updates"
    title = "Round has no updates"


class NonFiniteAggregate(Conflict):
    slug = "non-finite-aggregate"
    title = "Aggregation refused: the result is not finite"


class NotSampled(Conflict):
    slug = "not-sampled"
    title = "Not in this round's sample"


class PrivacyBudgetExhausted(Conflict):
    slug = "privacy-budget-exhausted"
    title = "Privacy budget exhausted"


class LastAdminToken(Conflict):
    slug = "last-admin-token"
    title = "The last active admin token"


class FederationCompleted(Conflict):
    slug = "federation-completed"
    title = "Federation completed"


class EvaluationExists(Conflict):
    slug = "evaluation-exists"
    title = "Test figures already reported"


class RequestInProgress(Conflict):
    slug = "request-in-progress"
    title = "Request in progress"


class PayloadTooLarge(CoordinatorError):
    status_code = 413
    slug = "payload-too-large"
    title = "Payload too large"


class TooManyRequests(CoordinatorError):
    """A rate limit or the long-poll cap; ``headers`` carry ``Retry-After``."""

    status_code = 429
    slug = "too-many-requests"
    title = "Too many requests"


class UnsupportedMediaType(CoordinatorError):
    status_code = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class InvalidUpdate(CoordinatorError):
    status_code = 422
    slug = "invalid-update"
    title = "Invalid update"


class ValidationFailed(CoordinatorError):
    status_code = 422
    slug = "validation-error"
    title = "Validation error"


class IdempotencyKeyReused(CoordinatorError):
    status_code = 422
    slug = "idempotency-key-reused"
    title = "Idempotency-Key reused"


class ServiceUnavailable(CoordinatorError):
    status_code = 503
    slug = "service-unavailable"
    title = "Service unavailable"


def database_problem(exc: DatabaseError) -> CoordinatorError | None:
    """The domain error a database error means for the caller; None: an internal error."""
    if is_conflict(exc):
        return Conflict("the request conflicts with the current state; read it and retry")
    if is_retryable(exc):
        return ServiceUnavailable(
            "the database is busy; retry shortly", headers={"Retry-After": "1"}
        )
    return None
