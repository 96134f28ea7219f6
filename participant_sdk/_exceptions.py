"""Exceptions raised by the participant SDK.

Every error the client raises is a :class:`FedrecError`::

    FedrecError
     ├── WaitTimeoutError                          wait_for_next() ran out of time
     └── APIError(message, request, body)
          ├── APIConnectionError                   no HTTP response (DNS, refused, reset)
          │    └── APITimeoutError                 connect/read/write/pool timeout
          ├── APIResponseValidationError           a 2xx body that is not what the contract says
          │    └── ModelSignatureError             weights not signed by the pinned key
          └── APIStatusError(status_code, response, body, problem_type)
               ├── BadRequestError                 400
               ├── AuthenticationError             401
               │    └── ParticipantRevokedError    401 participant-revoked
               ├── PermissionDeniedError           403
               ├── NotFoundError                   404
               ├── ConflictError                   409
               │    ├── RoundClosedError           409 round-closed
               │    ├── FutureRoundError           409 future-round
               │    ├── UpdateConflictError        409 update-conflict
               │    ├── RoundNotOpenError          409 round-not-open
               │    ├── NoUpdatesError             409 no-updates
               │    ├── NotSampledError            409 not-sampled
               │    ├── PrivacyBudgetExhaustedError 409 privacy-budget-exhausted
               │    └── FederationCompletedError   409 federation-completed
               ├── PayloadTooLargeError            413
               ├── UnsupportedMediaTypeError       415
               ├── UnprocessableEntityError        422
               │    └── InvalidUpdateError         422 invalid-update (.field)
               ├── RateLimitError                  429
               └── InternalServerError             >= 500
                    └── ServiceUnavailableError    503

The coordinator answers every error with an RFC 9457 ``application/problem+json`` body
whose ``type`` is ``urn:fedrec:problem:<slug>``. :func:`_make_status_error` picks the
class from the HTTP status, then refines it from the slug; the slug never moves an
error out of its status class. Any other status >= 400 raises a plain
:class:`APIStatusError`.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "FederationCompletedError",
    "NotSampledError",
    "PrivacyBudgetExhaustedError",
    "FedrecError",
    "FutureRoundError",
    "InternalServerError",
    "InvalidUpdateError",
    "ModelSignatureError",
    "NoUpdatesError",
    "NotFoundError",
    "ParticipantRevokedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RoundClosedError",
    "RoundNotOpenError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "UpdateConflictError",
    "WaitTimeoutError",
]

PROBLEM_TYPE_PREFIX = "urn:fedrec:problem:"
# Bodies that are not problem documents are quoted in the message up to this length.
_MAX_QUOTED_BODY = 300


class FedrecError(Exception):
    """Root of every exception the participant SDK raises."""


class WaitTimeoutError(FedrecError, TimeoutError):
    """:meth:`Rounds.wait_for_next` saw no newer round before its deadline.

    Attributes
    ----------
    after : int
        The round number the caller waited to see exceeded.
    """

    def __init__(self, message: str, *, after: int) -> None:
        super().__init__(message)
        self.after = after


class APIError(FedrecError):
    """A request to the coordinator failed.

    Parameters
    ----------
    message : str
        What went wrong, readable on its own.
    request : httpx.Request
        The request that failed.
    body : object, optional
        The decoded response body (a ``dict`` for problem documents), or ``None``.
    """

    def __init__(self, message: str, request: httpx.Request, body: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.body = body


class APIConnectionError(APIError):
    """No HTTP response arrived: the connection failed or broke (retried automatically)."""

    def __init__(self, request: httpx.Request, message: str = "Connection error.") -> None:
        super().__init__(message, request, None)


class APITimeoutError(APIConnectionError):
    """The request timed out (retried automatically)."""

    def __init__(self, request: httpx.Request, message: str = "Request timed out.") -> None:
        super().__init__(request, message)


class APIResponseValidationError(APIError):
    """The coordinator answered 2xx, but the body does not match the REST contract."""

    def __init__(
        self, message: str, *, response: httpx.Response, body: object | None = None
    ) -> None:
        super().__init__(message, response.request, body)
        self.response = response
        self.status_code = response.status_code


class ModelSignatureError(APIResponseValidationError):
    """Downloaded weights the client refuses: unsigned, signed by another key than the
    pinned one, or not the bytes the signed manifest names (a missing or weak ``ETag``
    too). Never retried: the bytes cannot be trusted, whoever served them."""


class APIStatusError(APIError):
    """The coordinator answered with a 4xx or 5xx status.

    Attributes
    ----------
    status_code : int
        The HTTP status.
    response : httpx.Response
        The full response.
    body : object
        The decoded body: the problem document as a ``dict`` when the server sent one.
    problem_type : str or None
        The problem ``type`` URN, e.g. ``"urn:fedrec:problem:round-closed"``.
    """

    status_code: int

    def __init__(self, message: str, *, response: httpx.Response, body: object | None) -> None:
        super().__init__(message, response.request, body)
        self.response = response
        self.status_code = response.status_code
        self.problem: dict[str, Any] = body if isinstance(body, dict) else {}
        problem_type = self.problem.get("type")
        self.problem_type: str | None = problem_type if isinstance(problem_type, str) else None

    @property
    def slug(self) -> str | None:
        """The problem slug, ``type`` without its ``urn:fedrec:problem:`` prefix."""
        if self.problem_type is None or not self.problem_type.startswith(PROBLEM_TYPE_PREFIX):
            return None
        return self.problem_type.removeprefix(PROBLEM_TYPE_PREFIX)

    @property
    def detail(self) -> str | None:
        """The problem ``detail``: what happened, in a sentence."""
        detail = self.problem.get("detail")
        return detail if isinstance(detail, str) else None


class BadRequestError(APIStatusError):
    """400: the request is malformed."""

    status_code: Literal[400] = 400


class AuthenticationError(APIStatusError):
    """401: no token, or a token the coordinator does not know."""

    status_code: Literal[401] = 401


class ParticipantRevokedError(AuthenticationError):
    """401 ``participant-revoked``: this participant's token was revoked by the admin."""


class PermissionDeniedError(APIStatusError):
    """403: a participant token on an admin route or on another federation."""

    status_code: Literal[403] = 403


class NotFoundError(APIStatusError):
    """404: the federation, round, model version, participant or deployment does not exist."""

    status_code: Literal[404] = 404


class ConflictError(APIStatusError):
    """409: the request conflicts with the federation's state; never retried."""

    status_code: Literal[409] = 409


class RoundClosedError(ConflictError):
    """409 ``round-closed``: the upload arrived after its round closed.

    Attributes ``round`` and ``current_round`` come from the problem document.
    """

    @property
    def round(self) -> int | None:
        """The round the upload was for."""
        value = self.problem.get("round")
        return value if isinstance(value, int) else None

    @property
    def current_round(self) -> int | None:
        """The round open now, if any."""
        value = self.problem.get("current_round")
        return value if isinstance(value, int) else None


class FutureRoundError(ConflictError):
    """409 ``future-round``: the upload is for a round that is not open yet."""


class UpdateConflictError(ConflictError):
    """409 ``update-conflict``: this participant already uploaded a different update."""


class RoundNotOpenError(ConflictError):
    """409 ``round-not-open``: aggregate was asked of a round that is not open."""


class NoUpdatesError(ConflictError):
    """409 ``no-updates``: aggregate was asked of a round without any update."""


class NotSampledError(ConflictError):
    """409 ``not-sampled``: this participant was not drawn into the round it uploaded to."""


class PrivacyBudgetExhaustedError(ConflictError):
    """409 ``privacy-budget-exhausted``: the DP budget did not let the round open."""


class FederationCompletedError(ConflictError):
    """409 ``federation-completed``: the federation has finished; no more rounds."""


class PayloadTooLargeError(APIStatusError):
    """413: the upload exceeds the coordinator's size limit."""

    status_code: Literal[413] = 413


class UnsupportedMediaTypeError(APIStatusError):
    """415: wrong ``Content-Type`` for the endpoint."""

    status_code: Literal[415] = 415


class UnprocessableEntityError(APIStatusError):
    """422: the body parsed but is invalid (``validation-error`` lists ``errors``)."""

    status_code: Literal[422] = 422

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The ``errors`` member of a ``validation-error``: ``{loc, msg}`` items."""
        errors = self.problem.get("errors")
        return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


class InvalidUpdateError(UnprocessableEntityError):
    """422 ``invalid-update``: the update failed validation.

    Attributes
    ----------
    field : str or None
        The tensor or metadata key to fix, e.g. ``"item_factors"`` or ``"num_examples"``.
    """

    def __init__(self, message: str, *, response: httpx.Response, body: object | None) -> None:
        super().__init__(message, response=response, body=body)
        field = self.problem.get("field")
        self.field: str | None = field if isinstance(field, str) else None


class RateLimitError(APIStatusError):
    """429: too many requests (retried automatically, honouring ``Retry-After``)."""

    status_code: Literal[429] = 429


class InternalServerError(APIStatusError):
    """5xx: the coordinator failed (retried automatically)."""


class ServiceUnavailableError(InternalServerError):
    """503: the coordinator is temporarily unable to serve (retried, honouring ``Retry-After``)."""

    status_code: Literal[503] = 503


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}

_PROBLEM_CLASSES: dict[str, type[APIStatusError]] = {
    "participant-revoked": ParticipantRevokedError,
    "round-closed": RoundClosedError,
    "future-round": FutureRoundError,
    "update-conflict": UpdateConflictError,
    "round-not-open": RoundNotOpenError,
    "no-updates": NoUpdatesError,
    "federation-completed": FederationCompletedError,
    "not-sampled": NotSampledError,
    "privacy-budget-exhausted": PrivacyBudgetExhaustedError,
    "invalid-update": InvalidUpdateError,
}


def _decode_error_body(response: httpx.Response) -> object | None:
    """The response body as JSON when it parses, else as text, else ``None``."""
    if not response.content:
        return None
    try:
        body: object = response.json()
    except ValueError:
        return response.text
    return body


def _make_status_error(response: httpx.Response) -> APIStatusError:
    """Build the exception for a response with status >= 400.

    The class comes from the status, refined by the problem ``type`` slug when the
    refined class belongs to that status; the message leads with the status and slug
    and carries the problem ``detail``.
    """
    status = response.status_code
    body = _decode_error_body(response)
    problem: dict[str, Any] = body if isinstance(body, dict) else {}

    cls = _STATUS_CLASSES.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else APIStatusError
    problem_type = problem.get("type")
    slug = None
    if isinstance(problem_type, str) and problem_type.startswith(PROBLEM_TYPE_PREFIX):
        slug = problem_type.removeprefix(PROBLEM_TYPE_PREFIX)
        refined = _PROBLEM_CLASSES.get(slug)
        if refined is not None and issubclass(refined, cls):
            cls = refined

    detail = problem.get("detail") or problem.get("title")
    if not isinstance(detail, str) or not detail:
        if isinstance(body, str) and body.strip():
            detail = body.strip()[:_MAX_QUOTED_BODY]
        else:
            detail = response.reason_phrase or "no details"
    message = f"{status} {slug or response.reason_phrase or 'error'}: {detail}"
    return cls(message, response=response, body=body)
