"""The OpenAPI document reads like documentation, for every operation and schema.

Summaries are written (not derived from function names), every JSON body has an example
that validates against its schema, every schema and field is described, and every
operation lists only the errors it can answer, as ``application/problem+json`` bodies of
the ``Problem`` schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from coordinator.api import schemas
from coordinator.api.idempotency import TOKEN_REFRESH_SUFFIX
from coordinator.app import create_app
from coordinator.config import Settings
from tests.conftest import ADMIN_TOKEN, SECRET_KEY

REF = "#/components/schemas/"
METHODS = {"get", "put", "post", "delete", "patch"}
BINARY = "application/octet-stream"


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("openapi-docs")
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
        yield app.openapi()
    finally:
        app.state.context.sessions.kw["bind"].dispose()


def operations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method in METHODS
    ]


def operation(doc: dict[str, Any], name: str) -> dict[str, Any]:
    method, path = name.split(" ", 1)
    op: dict[str, Any] = doc["paths"][path][method.lower()]
    return op


def model_of(schema: dict[str, Any]) -> type[BaseModel]:
    assert "$ref" in schema, f"inline schema {schema}"
    model = getattr(schemas, schema["$ref"].removeprefix(REF))
    assert issubclass(model, BaseModel)
    return model


def examples_of(media: dict[str, Any]) -> list[Any]:
    found = [media["example"]] if "example" in media else []
    return found + [named["value"] for named in media.get("examples", {}).values()]


def test_the_document_has_operations(doc: dict[str, Any]) -> None:
    assert len(operations(doc)) >= 22


def test_every_summary_is_written_not_generated(doc: dict[str, Any]) -> None:
    for name, op in operations(doc):
        summary = op.get("summary", "")
        assert summary, f"{name}: no summary"
        # FastAPI's own summary is the function name in title case ("Get Me"), and the
        # operation id starts with that function name
        function = summary.lower().replace(" ", "_")
        generated = op["operationId"].startswith(function + "_") and summary == summary.title()
        assert not generated, f"{name}: {summary!r} is generated from the function name"
        assert op.get("description"), f"{name}: no description (the route's docstring)"


def test_every_json_request_body_has_a_valid_example(doc: dict[str, Any]) -> None:
    checked = 0
    for name, op in operations(doc):
        for media_type, media in op.get("requestBody", {}).get("content", {}).items():
            if media_type == BINARY:
                assert op["requestBody"].get("description"), f"{name}: undescribed bytes"
                continue
            found = examples_of(media)
            assert found, f"{name}: request body without an example"
            for example in found:
                model_of(media["schema"]).model_validate(example)
                checked += 1
    assert checked >= 5


def test_every_response_is_described_with_an_example(doc: dict[str, Any]) -> None:
    for name, op in operations(doc):
        for status, response in op["responses"].items():
            assert response.get("description"), f"{name} {status}: no description"
            for media_type, media in response.get("content", {}).items():
                if media_type == BINARY:
                    continue
                found = examples_of(media)
                assert found, f"{name} {status} {media_type}: no example"
                model = model_of(media["schema"])
                for example in found:
                    model.model_validate(example)
                    if model is schemas.Problem:
                        assert example["status"] == int(status), f"{name} {status}"
                        assert example["type"].startswith("urn:fedrec:problem:")


def test_every_success_has_a_body_example(doc: dict[str, Any]) -> None:
    for name, op in operations(doc):
        successes = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        assert successes, f"{name}: no success response"
        for status, response in successes.items():
            if status == "204":  # No Content: what it says is in its headers
                assert response.get("headers"), f"{name} 204: no header documented"
                assert not response.get("content"), f"{name} 204 documents a body"
                continue
            assert response.get("content"), f"{name} {status}: no body documented"


def test_errors_are_problem_json_with_the_problem_schema(doc: dict[str, Any]) -> None:
    problem = doc["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    errors = 0
    for name, op in operations(doc):
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            content = response.get("content", {})
            assert list(content) == ["application/problem+json"], f"{name} {status}"
            assert content["application/problem+json"]["schema"] == {"$ref": f"{REF}Problem"}
            errors += 1
    assert errors > 50


def test_every_schema_and_field_is_described(doc: dict[str, Any]) -> None:
    missing = []
    for name, schema in doc["components"]["schemas"].items():
        if not schema.get("description"):
            missing.append(name)
        for prop, sub in schema.get("properties", {}).items():
            if not sub.get("description"):
                missing.append(f"{name}.{prop}")
    assert missing == []


def test_adaptive_clipping_is_documented(doc: dict[str, Any]) -> None:
    schemas_ = doc["components"]["schemas"]
    adaptive = schemas_["AdaptiveClipping"]
    assert set(adaptive["properties"]) == {
        "target_quantile",
        "learning_rate",
        "clipped_count_stddev",
    }
    assert "Andrew et al. 2021" in adaptive["description"]
    assert "noise_multiplier / 2" in adaptive["properties"]["clipped_count_stddev"]["description"]
    dp_fields = [s for n, s in schemas_.items() if n.startswith("DifferentialPrivacy")]
    assert dp_fields
    for dp in dp_fields:
        assert "secure aggregation" in dp["properties"]["adaptive_clipping"]["description"]
    spent = [s for n, s in schemas_.items() if n.startswith("PrivacySpent")]
    assert spent
    for schema in spent:
        for field in ("clip_norm", "next_clip_norm"):
            assert schema["properties"][field]["description"].startswith("Adaptive clipping")


def statuses(doc: dict[str, Any], name: str) -> set[int]:
    return {int(s) for s in operation(doc, name)["responses"]}


@pytest.mark.parametrize(
    ("name", "absent"),
    [
        ("POST /v1/federations", {404, 415}),
        ("GET /v1/federations", {403, 404, 422}),
        ("POST /v1/federations/{federation_id}/rounds/{number}/aggregate", {413, 415}),
        ("GET /v1/federations/{federation_id}", {400, 409, 413, 415, 422}),
        ("GET /healthz", {401, 403, 404, 422, 429, 503}),
    ],
)
def test_errors_that_cannot_happen_are_not_listed(
    doc: dict[str, Any], name: str, absent: set[int]
) -> None:
    assert statuses(doc, name) & absent == set()


def test_error_lists_follow_what_each_operation_does(doc: dict[str, Any]) -> None:
    for name, op in operations(doc):
        method, path = name.split(" ", 1)
        got = statuses(doc, name)
        body = "requestBody" in op
        if path.startswith("/v1/"):
            # every v1 route authenticates, is rate limited and reads the DB
            assert {401, 429, 503} <= got, name
        # the body size limit answers only where a body is expected
        assert (413 in got) == body, name
        assert (415 in got) == (BINARY in op.get("requestBody", {}).get("content", {})), name
        # a path parameter names something that may not exist
        assert (404 in got) == ("{" in path), name
        # a keyed non-GET JSON request can meet the idempotency errors (uploads key themselves)
        # a token refresh answers with a secret: never recorded, so never keyed
        keyed = method != "GET" and 415 not in got and not path.endswith(TOKEN_REFRESH_SUFFIX)
        assert (400 in got) == keyed, name
        if keyed:
            assert {409, 422} <= got, name
        if body:
            assert 422 in got, f"{name}: a body can fail validation"


def test_upload_lists_its_real_conflicts(doc: dict[str, Any]) -> None:
    upload = operation(doc, "PUT /v1/federations/{federation_id}/rounds/{number}/update")
    assert {200, 201, 403, 404, 409, 413, 415, 422} <= {int(s) for s in upload["responses"]}
    conflict = upload["responses"]["409"]["content"]["application/problem+json"]["example"]
    assert conflict["type"] == "urn:fedrec:problem:round-closed"
    assert "closed" in upload["responses"]["409"]["description"]
