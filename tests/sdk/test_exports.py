"""The public surface of ``participant_sdk`` is exactly what we mean to export."""

from __future__ import annotations

import inspect

import participant_sdk
from participant_sdk import _exceptions, resources, types

EXPECTED = {
    # clients and their configuration
    "AsyncClient",
    "Client",
    "KeepAliveTransport",
    "keep_alive_transport",
    # the participant loop
    "FederatedRecommender",
    "Recommendations",
    "StepOutcome",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "NOT_GIVEN",
    "NotGiven",
    "TimeoutTypes",
    # exceptions
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
    # response models and federation specs
    "AdminToken",
    "IssuedAdminToken",
    "DeployPolicy",
    "Deployment",
    "DeploymentEvent",
    "EnrolledParticipant",
    "Evaluation",
    "Federation",
    "Health",
    "LimitsPolicy",
    "MetricsRow",
    "ModelSpec",
    "ModelVersion",
    "Participant",
    "PrivacyPolicy",
    "Receipt",
    "Round",
    "RoundPolicy",
    "RoundWork",
    "SamplingPolicy",
    "SigningKey",
    "StrategySpec",
    "Target",
    "TransportPolicy",
}


def test_all_is_exactly_the_intended_api() -> None:
    assert len(participant_sdk.__all__) == len(set(participant_sdk.__all__))
    assert set(participant_sdk.__all__) == EXPECTED


def test_every_export_resolves() -> None:
    for name in participant_sdk.__all__:
        assert getattr(participant_sdk, name) is not None, name


def test_every_exception_is_exported() -> None:
    defined = {
        name
        for name, obj in vars(_exceptions).items()
        if inspect.isclass(obj)
        and issubclass(obj, participant_sdk.FedrecError)
        and obj.__module__ == _exceptions.__name__
    }
    assert defined == set(_exceptions.__all__)
    assert defined <= set(participant_sdk.__all__)


def test_public_classes_are_documented() -> None:
    for name in participant_sdk.__all__:
        obj = getattr(participant_sdk, name)
        if inspect.isclass(obj):
            assert obj.__doc__, name
            assert obj.__doc__.strip(), name


def test_submodule_exports_resolve() -> None:
    for module in (types, resources, _exceptions):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert {name for name in resources.__all__ if not name.startswith("Async")} == {
        "AdminTokens",
        "Deployments",
        "Evaluations",
        "Federations",
        "Models",
        "Participants",
        "Rounds",
        "SecAgg",
        "Updates",
    }
