"""/metrics: Prometheus counters move with real uploads, aggregations and long-polls."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.exc import DBAPIError

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain import aggregation_job
from coordinator.migrate import upgrade
from tests.conftest import ADMIN_TOKEN, SECRET_KEY
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    federation_body,
    put_update,
    update_bytes,
)

UPLOAD = "/v1/federations/{federation_id}/rounds/{number}/update"


def scrape(client: TestClient, headers: dict[str, str]) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return float(samples.get((name, frozenset(labels.items())), 0.0))


def test_metrics_need_the_admin_or_the_scrape_token(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    settings = settings.model_copy(update={"metrics_token": SecretStr("scrape-me")})
    with TestClient(create_app(settings, run_timer=False)) as client:
        assert_problem(client.get("/metrics"), 401, "unauthorized")
        wrong = {"Authorization": "Bearer not-a-token"}
        assert_problem(client.get("/metrics", headers=wrong), 401, "unauthorized")
        fid = create_federation(client, admin_headers)["id"]
        _, participant = enrol(client, admin_headers, fid)
        assert_problem(client.get("/metrics", headers=participant), 403, "forbidden")
        assert "fedrec_rounds_total" in client.get("/metrics", headers=admin_headers).text
        scraper = {"Authorization": "Bearer scrape-me"}
        assert client.get("/metrics", headers=scraper).status_code == 200
        # the scrape token opens /metrics only
        assert_problem(client.get("/v1/federations", headers=scraper), 401, "unauthorized")


def test_counters_follow_uploads_and_aggregation(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    before = scrape(client, admin_headers)
    fid = create_federation(client, admin_headers)["id"]
    _, first = enrol(client, admin_headers, fid, "a")
    _, second = enrol(client, admin_headers, fid, "b")
    body = update_bytes()
    assert put_update(client, fid, 1, body, first).status_code == 201
    assert put_update(client, fid, 1, body, first).status_code == 200  # the same bytes
    assert put_update(client, fid, 1, body, second, content_type="text/csv").status_code == 415
    aggregate = client.post(f"/v1/federations/{fid}/rounds/1/aggregate", headers=admin_headers)
    assert aggregate.status_code == 201, aggregate.text
    assert put_update(client, fid, 1, update_bytes(seed=2), second).status_code == 409
    too_big = b"\0" * (4 * 1024 * 1024 + 1)  # the fixture's FEDREC_MAX_UPLOAD_BYTES + 1
    assert put_update(client, fid, 2, too_big, second).status_code == 413
    after = scrape(client, admin_headers)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("fedrec_rounds_total", event="opened") == 2  # round 1 at creation, then 2
    assert delta("fedrec_rounds_total", event="closed") == 1
    assert delta("fedrec_rounds_total", event="failed") == 0
    assert delta("fedrec_aggregation_seconds_count") == 1
    assert delta("fedrec_aggregation_seconds_sum") > 0
    assert delta("fedrec_uploads_accepted_total") == 1
    assert delta("fedrec_uploads_replayed_total") == 1
    assert delta("fedrec_uploads_refused_total", reason="unsupported-media-type") == 1
    assert delta("fedrec_uploads_refused_total", reason="round-closed") == 1
    assert delta("fedrec_uploads_refused_total", reason="payload-too-large") == 1
    # by route template, whatever the federation id
    put = {"method": "PUT", "route": UPLOAD}
    assert delta("fedrec_http_request_duration_seconds_count", **put) == 5
    assert delta("fedrec_http_requests_total", **put, status="201") == 1
    # bodies read: the accepted, the replayed and the late upload (the 415 and the 413
    # were refused before their bodies were read)
    assert delta("fedrec_http_request_bytes_total", route=UPLOAD) == 3 * len(body)
    assert delta("fedrec_http_response_bytes_total", route=UPLOAD) > 0
    assert not any(fid in str(labels) for _, labels in after)


def test_long_polls_held_is_a_live_gauge(client: TestClient, admin_headers: dict[str, str]) -> None:
    fid = create_federation(client, admin_headers)["id"]
    url = f"/v1/federations/{fid}/rounds/current?after=1&wait=3"
    poll = threading.Thread(target=client.get, args=(url,), kwargs={"headers": admin_headers})
    poll.start()
    try:
        held = 0.0
        deadline = time.monotonic() + 3
        while held < 1 and time.monotonic() < deadline:  # bounded: the poll lasts 3 s
            held = value(scrape(client, admin_headers), "fedrec_long_polls_held")
            time.sleep(0.05)
        assert held == 1
    finally:
        poll.join(timeout=10)
    assert value(scrape(client, admin_headers), "fedrec_long_polls_held") == 0


def test_database_errors_are_counted(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    upgrade(f"sqlite:///{db}")
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{db}",
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        sqlite_busy_timeout_ms=100,
        _env_file=None,
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(settings, run_timer=False)) as client:
        before = value(scrape(client, admin), "fedrec_database_errors_total", kind="retryable")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            response = client.post("/v1/federations", json=federation_body(), headers=admin)
            assert_problem(response, 503, "service-unavailable")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        after = value(scrape(client, admin), "fedrec_database_errors_total", kind="retryable")
    assert after - before == 1


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/federations/abc/participants/me", "/v1/federations/{federation_id}/participants/me"),
        (
            "/v1/federations/abc/participants/p1",
            "/v1/federations/{federation_id}/participants/{participant_id}",
        ),
        ("/v1/federations/abc/rounds/current", "/v1/federations/{federation_id}/rounds/current"),
        ("/v1/federations/abc/rounds/3", "/v1/federations/{federation_id}/rounds/{number}"),
        ("/metrics", "/metrics"),
        ("/v1/federations/abc/../../etc", "unmatched"),
        ("/nope", "unmatched"),
    ],
)
def test_requests_are_labelled_by_route_template(
    client: TestClient, admin_headers: dict[str, str], path: str, template: str
) -> None:
    before = scrape(client, admin_headers)
    client.get(path, headers=admin_headers)
    after = scrape(client, admin_headers)
    key = (
        "fedrec_http_request_duration_seconds_count",
        frozenset({"method": "GET", "route": template}.items()),
    )
    scrapes = 1 if template == "/metrics" else 0  # the first scrape counts itself too
    assert after.get(key, 0) - before.get(key, 0) == 1 + scrapes


def test_background_failures_are_counted(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(*_args: object, **_kwargs: object) -> None:
        raise DBAPIError("UPDATE rounds", {}, Exception("database is locked"))

    name = "fedrec_background_errors_total"
    before = value(scrape(client, admin_headers), name, database="true")
    monkeypatch.setattr(aggregation_job, "run", locked)  # as the worker calls it
    future = app.state.worker.kick("f", 1)
    assert future is not None
    future.result(timeout=10)  # the worker logs and counts; it does not raise
    assert value(scrape(client, admin_headers), name, database="true") - before == 1
