"""End to end: ``fedrec serve --log-format json`` (via FEDREC_LOG_FORMAT) writes one JSON
object per line, uvicorn's access lines included, each request's lines with its id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ADMIN_TOKEN, ServerProcess


@pytest.mark.slow
def test_serve_writes_json_lines_with_the_request_id(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", FEDREC_LOG_FORMAT="json")
    server.start()
    try:
        ok = httpx.get(f"{server.url}/readyz", headers={"X-Request-ID": "probe-ok"}, timeout=10)
        assert ok.status_code == 200
        shutil.rmtree(tmp_path / "data" / "blobs")
        failing = httpx.get(
            f"{server.url}/readyz", headers={"X-Request-ID": "probe-503"}, timeout=10
        )
        assert failing.status_code == 503
        assert failing.headers["X-Request-ID"] == "probe-503"
    finally:
        server.stop()
    text = server.log_path.read_text()
    # the startup banner is printed, not logged; every log record is one JSON object
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    banner = [line for line in text.splitlines() if line and not line.startswith("{")]
    assert all(line.startswith(("fedrec coordinator on", "  ")) for line in banner), banner
    by_id: dict[str, list[dict[str, str]]] = {}
    for record in records:
        by_id.setdefault(record.get("request_id", ""), []).append(record)
    assert any(r["logger"] == "uvicorn.access" for r in by_id["probe-ok"])
    loggers = {r["logger"] for r in by_id["probe-503"]}
    assert {"uvicorn.access", "fedrec.readiness"} <= loggers
    assert any(r["logger"] == "uvicorn.error" for r in records)  # startup, no request id


class TwoWorkerServer(ServerProcess):
    """``fedrec serve --workers 2``: two processes on one port."""

    def _command(self, *args: str) -> list[str]:
        extra = ["--workers", "2"] if args and args[0] == "serve" else []
        return super()._command(*args, *extra)


@pytest.mark.slow
def test_metrics_sum_every_worker_process(tmp_path: Path) -> None:
    server = TwoWorkerServer(tmp_path / "data")
    server.start()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    route = 'fedrec_http_requests_total{method="GET",route="/healthz",status="200"}'
    try:
        for _ in range(40):  # a new connection each: the kernel spreads them over workers
            assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        counts = set()
        for _ in range(6):
            text = httpx.get(f"{server.url}/metrics", headers=admin, timeout=10).text
            line = next(line for line in text.splitlines() if line.startswith(route))
            counts.add(float(line.rsplit(" ", 1)[1]))
        # start() polled /healthz too: at least the 40, and the same total from any worker
        assert len(counts) == 1, counts
        assert counts.pop() >= 40
        samples = tmp_path / "data" / "prometheus"
        pids = {path.stem.rsplit("_", 1)[1] for path in samples.glob("*.db")}
        assert len(pids) >= 2, sorted(samples.iterdir())
    finally:
        server.stop()
