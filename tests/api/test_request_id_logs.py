"""X-Request-ID on every answer, and JSON log lines that carry it (``--log-format json``)."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from coordinator.config import Settings
from coordinator.logs import RequestIdFilter, json_formatter, log_config


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger writes JSON lines into the returned buffer during the test, with
    the formatter and filter of ``log_config("json")``."""
    config = log_config("json")
    assert config["handlers"]["json"]["filters"] == ["request_id"]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(config["formatters"]["json"]["()"]())
    handler.addFilter(config["filters"]["request_id"]["()"]())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_request_id_is_generated_when_none_is_sent(client: TestClient) -> None:
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_a_sane_incoming_request_id_is_echoed(client: TestClient) -> None:
    sent = "edge-7f3a:trace/42"
    assert client.get("/healthz", headers={"X-Request-ID": sent}).headers["X-Request-ID"] == sent


@pytest.mark.parametrize("sent", ["has space", "x" * 129, 'quote"d', ""])
def test_an_insane_incoming_request_id_is_replaced(client: TestClient, sent: str) -> None:
    got = client.get("/healthz", headers={"X-Request-ID": sent}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", got)


def test_problem_answers_carry_the_request_id_too(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.get("/v1/federations/nope", headers=admin_headers)
    assert response.status_code == 404
    assert response.headers["X-Request-ID"]


def test_json_log_lines_parse_and_carry_the_request_id(
    client: TestClient, settings: Settings, json_log: io.StringIO
) -> None:
    shutil.rmtree(settings.blob_dir)  # /readyz then logs why it is not ready
    response = client.get("/readyz", headers={"X-Request-ID": "probe-1"})
    assert response.status_code == 503
    assert response.headers["X-Request-ID"] == "probe-1"
    client.get("/readyz")  # a second request: its lines carry another id
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    ours = [line for line in lines if line.get("request_id") == "probe-1"]
    assert ours, lines
    assert any(line["logger"] == "fedrec.readiness" and "blob" in line["message"] for line in ours)
    for line in ours:
        assert {"time", "level", "logger", "message"} <= set(line)
    readiness = [line for line in lines if line["logger"] == "fedrec.readiness"]
    assert len({line["request_id"] for line in readiness}) == 2  # every line has its own


def test_text_format_is_uvicorns_own() -> None:
    text = log_config("text")
    assert "json" not in text["formatters"]
    assert {"default", "access"} <= set(text["formatters"])
    assert log_config("json")["formatters"]["json"]["()"] is json_formatter
    assert log_config("json")["filters"]["request_id"]["()"] is RequestIdFilter
