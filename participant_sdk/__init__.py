"""fedrec participant SDK: talk to a fedrec coordinator and train a recommender locally.

Quick start::

    from participant_sdk import Client

    with Client("http://localhost:8000", token) as client:  # or FEDREC_URL / FEDREC_TOKEN
        current = client.rounds.current(fid)
        weights = client.models.weights(fid, current.base_version)
        deltas = train(weights)  # your local training: trained - base, per tensor
        client.updates.submit(fid, current.number, deltas,
                              base_version=current.base_version, num_examples=n)
        current = client.rounds.wait_for_next(fid, after=current.number, timeout=3600)

:class:`AsyncClient` offers the same methods as coroutines. Errors are subclasses of
:class:`FedrecError` (the tree is drawn in ``participant_sdk._exceptions``). The byte
format lives in :mod:`participant_sdk.wire`; the response models in
:mod:`participant_sdk.types`.

The recommender (:class:`FederatedRecommender`, :mod:`participant_sdk.recsys`) is
imported on first use, so ``import participant_sdk`` stays the thin client.
"""

from typing import TYPE_CHECKING, Any

from ._base_client import TimeoutTypes
from ._client import AsyncClient, Client
from ._constants import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, NOT_GIVEN, NotGiven
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FederationCompletedError,
    FedrecError,
    FutureRoundError,
    InternalServerError,
    InvalidUpdateError,
    ModelSignatureError,
    NotFoundError,
    NotSampledError,
    NoUpdatesError,
    ParticipantRevokedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PrivacyBudgetExhaustedError,
    RateLimitError,
    RoundClosedError,
    RoundNotOpenError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
    UpdateConflictError,
    WaitTimeoutError,
)
from ._transport import KeepAliveTransport, keep_alive_transport
from .resources.rounds import RoundWork
from .types import (
    AdminToken,
    Deployment,
    DeploymentEvent,
    DeployPolicy,
    EnrolledParticipant,
    Evaluation,
    Federation,
    Health,
    IssuedAdminToken,
    LimitsPolicy,
    MetricsRow,
    ModelSpec,
    ModelVersion,
    Participant,
    PrivacyPolicy,
    Receipt,
    Round,
    RoundPolicy,
    SamplingPolicy,
    SigningKey,
    StrategySpec,
    Target,
    TransportPolicy,
)

__all__ = [
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
    "DeployPolicy",
    "Deployment",
    "DeploymentEvent",
    "EnrolledParticipant",
    "Evaluation",
    "Federation",
    "Health",
    "IssuedAdminToken",
    "LimitsPolicy",
    "MetricsRow",
    "ModelSpec",
    "ModelVersion",
    "Participant",
    "PrivacyPolicy",
    "Receipt",
    "Round",
    "RoundWork",
    "RoundPolicy",
    "SamplingPolicy",
    "SigningKey",
    "StrategySpec",
    "Target",
    "TransportPolicy",
]

# The participant loop pulls in the recommender (participant_sdk.recsys): load it on
# first use (PEP 562), not with the client.
_LAZY = {
    "FederatedRecommender": ".participant",
    "Recommendations": ".participant",
    "StepOutcome": ".participant",
}

if TYPE_CHECKING:
    from .participant import FederatedRecommender, Recommendations, StepOutcome


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
