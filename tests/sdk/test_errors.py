"""Error responses become typed exceptions: by status, refined by the problem ``type``."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

import participant_sdk as sdk
from participant_sdk import Client
from participant_sdk._exceptions import _make_status_error

from .fake_coordinator import FID, FakeCoordinator, problem, respond

FED = f"/v1/federations/{FID}"


def _response(status: int, body: object = None, *, content: bytes | None = None) -> httpx.Response:
    request = httpx.Request("PUT", f"http://coordinator.test{FED}/rounds/3/update")
    if body is not None:
        return httpx.Response(status, json=body, request=request)
    return httpx.Response(status, content=content, request=request)


def _problem_body(status: int, slug: str, **extra: object) -> dict[str, object]:
    return {
        "type": f"urn:fedrec:problem:{slug}",
        "title": "Title",
        "status": status,
        "detail": f"detail of {slug}",
        **extra,
    }


@pytest.mark.parametrize(
    ("status", "slug", "expected"),
    [
        (400, "bad-request", sdk.BadRequestError),
        (401, "unauthorized", sdk.AuthenticationError),
        (401, "participant-revoked", sdk.ParticipantRevokedError),
        (403, "forbidden", sdk.PermissionDeniedError),
        (404, "not-found", sdk.NotFoundError),
        (404, "round-not-found", sdk.NotFoundError),
        (409, "conflict", sdk.ConflictError),
        (409, "round-closed", sdk.RoundClosedError),
        (409, "future-round", sdk.FutureRoundError),
        (409, "update-conflict", sdk.UpdateConflictError),
        (409, "round-not-open", sdk.RoundNotOpenError),
        (409, "no-updates", sdk.NoUpdatesError),
        (409, "federation-completed", sdk.FederationCompletedError),
        (413, "payload-too-large", sdk.PayloadTooLargeError),
        (415, "unsupported-media-type", sdk.UnsupportedMediaTypeError),
        (422, "validation-error", sdk.UnprocessableEntityError),
        (422, "invalid-update", sdk.InvalidUpdateError),
        (429, "rate-limited", sdk.RateLimitError),
        (500, "internal-error", sdk.InternalServerError),
        (502, "bad-gateway", sdk.InternalServerError),
        (503, "service-unavailable", sdk.ServiceUnavailableError),
        (418, "teapot", sdk.APIStatusError),
    ],
)
def test_status_and_slug_pick_the_class(
    status: int, slug: str, expected: type[sdk.APIStatusError]
) -> None:
    error = _make_status_error(_response(status, _problem_body(status, slug)))
    assert type(error) is expected
    assert error.status_code == status
    assert error.problem_type == f"urn:fedrec:problem:{slug}"
    assert error.slug == slug
    assert error.detail == f"detail of {slug}"
    assert str(error) == f"{status} {slug}: detail of {slug}"
    assert error.message == str(error)
    assert error.request.method == "PUT"


def test_slug_never_leaves_its_status_class() -> None:
    error = _make_status_error(_response(400, _problem_body(400, "round-closed")))
    assert type(error) is sdk.BadRequestError


def test_every_status_class_pins_its_status() -> None:
    assert sdk.ConflictError.status_code == 409
    assert sdk.RoundClosedError.status_code == 409
    assert sdk.ServiceUnavailableError.status_code == 503
    assert sdk.InvalidUpdateError.status_code == 422


def test_round_closed_extension_members() -> None:
    body = _problem_body(409, "round-closed", round=3, current_round=4)
    error = _make_status_error(_response(409, body))
    assert isinstance(error, sdk.RoundClosedError)
    assert (error.round, error.current_round) == (3, 4)
    assert error.problem["current_round"] == 4


def test_invalid_update_names_the_field() -> None:
    error = _make_status_error(_response(422, _problem_body(422, "invalid-update", field="rows")))
    assert isinstance(error, sdk.InvalidUpdateError)
    assert error.field == "rows"


def test_validation_errors_list() -> None:
    errors = [{"loc": ["body", "name"], "msg": "field required"}]
    body = _problem_body(422, "validation-error", errors=errors)
    error = _make_status_error(_response(422, body))
    assert isinstance(error, sdk.UnprocessableEntityError)
    assert error.errors == errors


def test_non_problem_body_is_quoted() -> None:
    error = _make_status_error(_response(502, content=b"upstream connect error"))
    assert type(error) is sdk.InternalServerError
    assert error.problem_type is None
    assert error.slug is None
    assert str(error) == "502 Bad Gateway: upstream connect error"
    assert error.body == "upstream connect error"


def test_empty_body() -> None:
    error = _make_status_error(_response(404, content=b""))
    assert type(error) is sdk.NotFoundError
    assert error.body is None
    assert str(error) == "404 Not Found: Not Found"


def test_hierarchy() -> None:
    assert issubclass(sdk.APITimeoutError, sdk.APIConnectionError)
    assert issubclass(sdk.APIConnectionError, sdk.APIError)
    assert issubclass(sdk.APIStatusError, sdk.APIError)
    assert issubclass(sdk.APIResponseValidationError, sdk.APIError)
    assert issubclass(sdk.APIError, sdk.FedrecError)
    assert issubclass(sdk.WaitTimeoutError, sdk.FedrecError)
    assert issubclass(sdk.ParticipantRevokedError, sdk.AuthenticationError)
    assert issubclass(sdk.InvalidUpdateError, sdk.UnprocessableEntityError)
    assert issubclass(sdk.ServiceUnavailableError, sdk.InternalServerError)
    for conflict in (
        sdk.RoundClosedError,
        sdk.FutureRoundError,
        sdk.UpdateConflictError,
        sdk.RoundNotOpenError,
        sdk.NoUpdatesError,
        sdk.FederationCompletedError,
    ):
        assert issubclass(conflict, sdk.ConflictError)


class TestThroughTheClient:
    def test_late_upload_raises_round_closed(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add(
            "PUT",
            f"{FED}/rounds/3/update",
            problem(409, "round-closed", "round 3 is closed; the current round is 4", round=3),
        )
        deltas = {"item_factors": np.zeros((4, 2)), "item_bias": np.zeros(4)}
        with pytest.raises(sdk.RoundClosedError, match="round 3 is closed") as excinfo:
            client.updates.submit(FID, 3, deltas, base_version=2, num_examples=5)
        assert excinfo.value.round == 3
        assert excinfo.value.response.headers["Content-Type"] == "application/problem+json"

    def test_revoked_participant(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/participants/me", problem(401, "participant-revoked"))
        with pytest.raises(sdk.ParticipantRevokedError):
            client.participants.me(FID)

    def test_nothing_deployed(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/deployment", problem(404, "not-found", "nothing deployed"))
        with pytest.raises(sdk.NotFoundError, match="nothing deployed") as excinfo:
            client.deployment.get(FID)
        assert excinfo.value.slug == "not-found"

    def test_304_without_cache(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/models/1/weights", respond(304))
        with pytest.raises(sdk.APIResponseValidationError, match="304"):
            client.models.weights(FID, 1)
