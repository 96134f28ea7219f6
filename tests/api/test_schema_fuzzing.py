"""Schema fuzzing (issue 12): schemathesis generates requests from the whole OpenAPI
document, as the admin and as a participant, against the app on SQLite. Every answer
must be a non-5xx that conforms to the response schema the document declares.

Bounded: a fixed number of examples per operation, derandomised (the same requests on
every run), no example database. Path ``federation_id`` is the real federation, so the
requests reach past the 404 into the use cases.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.generation.case import Case

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.migrate import upgrade
from tests.conftest import ADMIN_TOKEN, SECRET_KEY

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, dict]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'fedrec.db'}"
    upgrade(url)
    settings = Settings(
        environment="test",
        data_dir=tmp / "data",
        database_url=url,
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        max_upload_bytes=1024 * 1024,
        _env_file=None,
    )
    app = create_app(settings, run_timer=False)
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        body = {"name": "fuzz", "model": {"kind": "mf", "num_items": 5, "dim": 2}}
        fid = client.post("/v1/federations", json=body, headers=admin).json()["id"]
        enrolled = client.post(
            f"/v1/federations/{fid}/participants", json={"name": "p"}, headers=admin
        ).json()
        tokens = {"admin": ADMIN_TOKEN, "participant": enrolled["token"]}
        yield app, {"federation_id": fid, "tokens": tokens}


bounded = hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


def _call(case: Case, role: str, known: dict) -> int:
    if "federation_id" in (case.path_parameters or {}):
        case.path_parameters["federation_id"] = known["federation_id"]
    model = case.body.get("model") if isinstance(case.body, dict) else None
    num_items = model.get("num_items") if isinstance(model, dict) else None
    if isinstance(num_items, int | float):
        # a valid model can be ~2 GB (5e8 parameters, or an ease B of 20k x 20k items):
        # allowed for the admin, but not something to allocate per example
        hypothesis.assume(num_items <= 1000)
    if isinstance(case.query, dict) and "wait" in case.query:
        case.query["wait"] = 0  # a long-poll would hold each example up to a minute
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {known['tokens'][role]}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
    return int(response.status_code)


@pytest.mark.parametrize("role", ["admin", "participant"])
def test_every_operation(role: str, fuzz_app: tuple[FastAPI, dict]) -> None:
    app, known = fuzz_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= len([r for r in app.routes if hasattr(r, "methods")]) - 4
    failures: dict[str, str] = {}
    statuses: Counter[int] = Counter()
    for operation in operations:

        @bounded
        @hypothesis.given(case=operation.as_strategy())
        def fuzz(case: Case) -> None:
            statuses[_call(case, role, known)] += 1

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure
            failures[operation.label] = "".join(traceback.format_exception(exc))[-4000:]
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    # the requests reached the use cases, not only the validation layer
    assert sum(statuses.values()) >= 10 * len(operations), statuses
    assert any(200 <= code < 300 for code in statuses), statuses
    print(role, dict(sorted(statuses.items())))  # noqa: T201 - the coverage, in -s runs
