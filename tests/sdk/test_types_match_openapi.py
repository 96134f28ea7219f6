"""The SDK's response models cannot drift from the OpenAPI document the coordinator serves.

Every schema of the document is either mapped to the SDK model that parses it
(``SDK_MODELS``) or deliberately left out with a reason (``REQUEST_BODIES``,
``ERROR_BODIES``). For every mapped pair, the SDK model declares every documented field
with a type that holds every value the schema allows (nested ``$ref`` s are mapped by
name, and each of those is checked in turn), requires no field the server may leave out,
and accepts fields it does not know, so an older SDK keeps working against a newer
coordinator.

Only this test sees both sides: the SDK itself never imports the coordinator.
"""

from __future__ import annotations

import collections.abc
import datetime as dt
import enum
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from coordinator.app import create_app
from coordinator.config import Settings
from participant_sdk import types as sdk
from tests.conftest import ADMIN_TOKEN, SECRET_KEY

JSONSchema = Mapping[str, Any]
TYPE_ALIAS: tuple[type, ...] = tuple(
    t for t in [getattr(typing, "TypeAliasType", None)] if isinstance(t, type)
)
REF_PREFIX = "#/components/schemas/"

# Server schema name -> the SDK model that parses it. ItemList is the SDK's (internal)
# parser of the ``{"items": [...]}`` envelopes of the list endpoints.
SDK_MODELS: dict[str, type[BaseModel]] = {
    "Health": sdk.Health,
    # federations and their configuration (the specs double as create() arguments)
    "Federation": sdk.Federation,
    "FederationList": sdk.ItemList[sdk.Federation],
    "Catalog": sdk.ItemList[str],
    "ModelSpec": sdk.ModelSpec,
    "StrategySpec": sdk.StrategySpec,
    "RoundPolicy": sdk.RoundPolicy,
    "SamplingPolicy": sdk.SamplingPolicy,
    "TargetSpec": sdk.Target,
    "DeployPolicy": sdk.DeployPolicy,
    "PrivacyPolicy": sdk.PrivacyPolicy,
    "DifferentialPrivacy": sdk.DifferentialPrivacy,
    "AdaptiveClipping": sdk.AdaptiveClipping,
    "SecureAggregation": sdk.SecureAggregation,
    "SecAggStatus": sdk.SecAggStatus,
    "PrivacySpent": sdk.PrivacySpent,
    "LimitsPolicy": sdk.LimitsPolicy,
    "TransportPolicy": sdk.TransportPolicy,
    # participants
    "Participant": sdk.Participant,
    "EnrolledParticipant": sdk.EnrolledParticipant,
    "AdminToken": sdk.AdminToken,
    "IssuedAdminToken": sdk.IssuedAdminToken,
    "AdminTokenList": sdk.ItemList[sdk.AdminToken],
    "ParticipantList": sdk.ItemList[sdk.Participant],
    # rounds, updates, model versions
    "Round": sdk.Round,
    "RoundList": sdk.ItemList[sdk.Round],
    "Receipt": sdk.Receipt,
    "EncodedWeights": sdk.EncodedWeights,
    "ModelVersion": sdk.ModelVersion,
    "ModelVersionList": sdk.ItemList[sdk.ModelVersion],
    "SigningKey": sdk.SigningKey,
    "AuditEvent": sdk.AuditEvent,
    "AuditEventList": sdk.ItemList[sdk.AuditEvent],
    # evaluations and deployment
    "Evaluation": sdk.Evaluation,
    "MetricsRow": sdk.MetricsRow,
    "MetricsHistory": sdk.ItemList[sdk.MetricsRow],
    "Deployment": sdk.Deployment,
    "DeploymentEvent": sdk.DeploymentEvent,
}

# Request-only schemas: the SDK builds these bodies from keyword arguments (and the spec
# models above), never parses them. The test checks no response uses them.
REQUEST_BODIES: dict[str, str] = {
    "FederationCreate": "body of client.federations.create(name, model, ...)",
    "ParticipantCreate": "body of client.participants.enrol(fid, name)",
    "AdminTokenCreate": "body of client.admin_tokens.create(name, expires_in_seconds=...)",
    "EvaluationCreate": "body of client.evaluations.report(fid, version, ...)",
    "DeploymentCreate": "body of client.deployment.promote(fid, version)",
    "SecAggKeys": "body of client.secagg.send(fid, n, 'keys', message.to_dict())",
    "SecAggShares": "body of client.secagg.send(fid, n, 'shares', message.to_dict())",
    "SecAggMaskedInput": "body of client.secagg.send(fid, n, 'masked-input', ...)",
    "SecAggUnmask": "body of client.secagg.send(fid, n, 'unmask', message.to_dict())",
}

# Error bodies: participant_sdk._exceptions reads the RFC 9457 problem document into
# APIStatusError (.problem, .problem_type, .detail) rather than a response model.
ERROR_BODIES: dict[str, str] = {
    "Problem": "every 4xx/5xx answer; parsed by participant_sdk._exceptions",
}

# SDK models with no server schema of their own.
SDK_ONLY = {sdk.BaseAPIModel}


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The coordinator's OpenAPI document (building it touches no database)."""
    tmp: Path = tmp_path_factory.mktemp("openapi")
    settings = Settings(
        environment="test",
        data_dir=tmp / "data",
        database_url=f"sqlite:///{tmp / 'fedrec.db'}",
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        _env_file=None,
    )
    app = create_app(settings, run_timer=False)
    try:
        return app.openapi()
    finally:
        app.state.context.sessions.kw["bind"].dispose()


def components(openapi: Mapping[str, Any]) -> dict[str, JSONSchema]:
    return dict(openapi["components"]["schemas"])


def ref_name(ref: str) -> str:
    assert ref.startswith(REF_PREFIX), ref
    return ref.removeprefix(REF_PREFIX)


def refs_in(node: Any) -> Iterator[str]:
    """Names of every schema ``node`` refers to, at any depth."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield ref_name(value)
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs_in(value)


def json_responses(openapi: Mapping[str, Any]) -> Iterator[tuple[str, JSONSchema]]:
    """``("GET /path 200", schema)`` for every JSON response body the API documents."""
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                for media_type, content in response.get("content", {}).items():
                    if "json" in media_type and "schema" in content:
                        yield f"{method.upper()} {path} {status}", content["schema"]


def response_schemas(openapi: Mapping[str, Any]) -> set[str]:
    """Every schema a response body can contain, directly or nested."""
    schemas = components(openapi)
    todo = [name for _, schema in json_responses(openapi) for name in refs_in(schema)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(refs_in(schemas[name]))
    return seen


# --- type compatibility: can the SDK annotation hold every value the schema allows? ----------


def members(annotation: Any) -> list[Any]:
    """The alternatives of an annotation: ``int | None`` -> ``[int, NoneType]``."""
    if isinstance(annotation, TYPE_ALIAS):  # ``type X = ...`` (Python 3.12+)
        return members(typing.cast(Any, annotation).__value__)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return members(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) for m in members(arg)]
    return [annotation]


def variants(schema: JSONSchema) -> list[JSONSchema]:
    """The alternatives of a schema: ``anyOf``/``oneOf`` branches, one per listed type."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [v for branch in schema[key] for v in variants(branch)]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return variants(schema["allOf"][0])
    if isinstance(schema.get("type"), list):
        return [{**schema, "type": t} for t in schema["type"]]
    return [schema]


def describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


class Checker:
    """Compares SDK models with the schemas of one OpenAPI document."""

    def __init__(self, openapi: Mapping[str, Any]) -> None:
        self.schemas = components(openapi)

    def model(self, model: type[BaseModel], schema: JSONSchema, where: str) -> list[str]:
        """Why ``model`` cannot parse every object ``schema`` allows ([] when it can)."""
        problems: list[str] = []
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        documented = schema.get("properties", {})
        required = set(schema.get("required", []))
        for prop, sub in documented.items():
            field = fields.get(prop)
            if field is None:
                problems.append(f"{where}.{prop}: documented by the server, missing in the SDK")
                continue
            if field.is_required() and prop not in required:
                problems.append(f"{where}.{prop}: required by the SDK, optional on the server")
            problems += self.annotation(field.annotation, sub, f"{where}.{prop}")
        for prop, field in fields.items():
            if prop not in documented and field.is_required():
                problems.append(f"{where}.{prop}: required by the SDK, unknown to the server")
        return problems

    def annotation(self, annotation: Any, schema: JSONSchema, where: str) -> list[str]:
        """Why ``annotation`` cannot hold every value ``schema`` allows ([] when it can)."""
        options = members(annotation)
        if any(option is Any or option is object for option in options):
            return []
        problems: list[str] = []
        for variant in variants(schema):
            attempts = [self.member(option, variant, where) for option in options]
            if all(attempts):
                found = "; ".join(p for attempt in attempts for p in attempt)
                problems.append(f"{where}: {describe(annotation)} cannot hold {variant} ({found})")
        return problems

    def member(self, option: Any, schema: JSONSchema, where: str) -> list[str]:
        """Why the single (non-union) type ``option`` cannot hold ``schema``'s values."""
        no = [f"{describe(option)} is not {schema.get('type', schema)}"]
        origin = typing.get_origin(option) or option
        args = typing.get_args(option)
        if "$ref" in schema:
            name = ref_name(schema["$ref"])
            if name in SDK_MODELS:  # mapped by name; that pair is checked on its own
                mapped = SDK_MODELS[name]
                ok = isinstance(option, type) and issubclass(option, mapped)
                return [] if ok else [f"{name} is parsed by {describe(mapped)}"]
            return self.annotation(option, self.schemas[name], f"{where}<{name}>")
        if "enum" in schema or "const" in schema:
            values = set(schema.get("enum", [])) | (
                {schema["const"]} if "const" in schema else set()
            )
            if origin is typing.Literal:
                missing = values - set(args)
                return [f"Literal lacks {sorted(missing, key=str)}"] if missing else []
            if isinstance(option, type) and issubclass(option, enum.Enum):
                missing = values - {member.value for member in option}
                return [f"{describe(option)} lacks {sorted(missing, key=str)}"] if missing else []
        kind = schema.get("type")
        if kind is None:
            return no  # any JSON value: only Any/object (handled above) holds it
        if kind == "null":
            return [] if option is None or option is type(None) else no
        if kind == "boolean":
            return [] if option is bool else no
        if kind == "integer":
            return [] if option is int else no
        if kind == "number":
            return [] if option is float else no  # int would reject 0.5
        if kind == "string":
            fmt = schema.get("format")
            if option is str or (fmt == "date-time" and option is dt.datetime):
                return []
            if fmt == "date" and option is dt.date:
                return []
            return no
        if kind == "array":
            sequences = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
            if origin not in sequences:
                return no
            if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                return [f"{describe(option)} is a fixed-length tuple"]
            item = args[0] if args else Any
            return self.annotation(item, schema.get("items", {}), f"{where}[]")
        if kind == "object":
            if isinstance(option, type) and issubclass(option, BaseModel):
                if "additionalProperties" in schema and "properties" not in schema:
                    return no  # a free-form mapping is not a model
                return self.model(option, schema, where)
            if origin not in (dict, collections.abc.Mapping):
                return no
            value = args[1] if len(args) == 2 else Any
            extra = schema.get("additionalProperties", {})
            return self.annotation(value, extra if isinstance(extra, Mapping) else {}, where)
        return no


# --- the tests ---------------------------------------------------------------------------------


def test_every_response_schema_has_an_sdk_model(openapi: dict[str, Any]) -> None:
    unmapped = response_schemas(openapi) - set(SDK_MODELS) - set(ERROR_BODIES)
    assert not unmapped, (
        f"responses use schemas without an SDK model: {sorted(unmapped)}; add a model to "
        "participant_sdk/types.py and map it in SDK_MODELS (or list it with a reason)"
    )


def test_every_schema_is_mapped_or_deliberately_left_out(openapi: dict[str, Any]) -> None:
    documented = set(components(openapi))
    listed = [*SDK_MODELS, *REQUEST_BODIES, *ERROR_BODIES]
    assert len(listed) == len(set(listed)), "a schema is listed twice"
    assert documented - set(listed) == set(), "schemas neither mapped nor left out"
    assert set(listed) - documented == set(), "stale entries: the server has no such schema"


def test_request_bodies_are_not_responses(openapi: dict[str, Any]) -> None:
    assert response_schemas(openapi) & set(REQUEST_BODIES) == set()


def test_response_bodies_are_named_schemas(openapi: dict[str, Any]) -> None:
    """Inline response schemas could not be mapped to an SDK model by name."""
    inline = [where for where, schema in json_responses(openapi) if "$ref" not in schema]
    assert inline == []


def test_every_sdk_model_has_a_server_schema() -> None:
    mapped = set(SDK_MODELS.values())
    public = {
        obj
        for name in sdk.__all__
        if isinstance(obj := getattr(sdk, name), type) and issubclass(obj, BaseModel)
    }
    assert public - mapped - SDK_ONLY == set()


@pytest.mark.parametrize("name", sorted(SDK_MODELS))
def test_sdk_model_declares_every_documented_field(openapi: dict[str, Any], name: str) -> None:
    model = SDK_MODELS[name]
    problems = Checker(openapi).model(model, components(openapi)[name], describe(model))
    assert problems == []


@pytest.mark.parametrize("model", sorted(set(SDK_MODELS.values()), key=describe), ids=describe)
def test_sdk_models_accept_unknown_fields(model: type[BaseModel]) -> None:
    """A newer coordinator may add fields; the SDK must not reject them."""
    assert model.model_config.get("extra") != "forbid"


# --- the checker itself -------------------------------------------------------------------------


class _Drifted(sdk.BaseAPIModel):
    id: str
    count: float
    tags: list[int]
    state: typing.Literal["open"]
    when: str | None = None


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"properties": {"gone": {"type": "string"}}}, "gone: documented by the server, missing"),
        ({"properties": {"id": {"type": "integer"}}}, "id: str cannot hold"),
        ({"properties": {"count": {"type": "string"}}}, "count: float cannot hold"),
        ({"properties": {"tags": {"type": "array", "items": {"type": "number"}}}}, "tags[]"),
        ({"properties": {"state": {"type": "string", "enum": ["open", "shut"]}}}, "['shut']"),
        ({"properties": {"state": {"type": "string"}}}, "state: Literal"),
        (
            {"properties": {"when": {"type": "string", "format": "date-time"}}, "required": []},
            "id: required by the SDK, unknown to the server",
        ),
        (
            {"properties": {"id": {"type": "string"}}, "required": []},
            "id: required by the SDK, optional on the server",
        ),
        ({"properties": {"id": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}, "id: str"),
    ],
)
def test_checker_reports_drift(schema: JSONSchema, expected: str) -> None:
    problems = Checker({"components": {"schemas": {}}}).model(_Drifted, schema, "_Drifted")
    assert any(expected in problem for problem in problems), problems


def test_checker_accepts_a_matching_model() -> None:
    schema = {
        "properties": {
            "id": {"type": "string"},
            "count": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "integer"}},
            "state": {"type": "string", "const": "open"},
            "when": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
        },
        "required": ["id", "count", "tags", "state", "when"],
    }
    assert Checker({"components": {"schemas": {}}}).model(_Drifted, schema, "_Drifted") == []
