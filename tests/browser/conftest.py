"""Browser tests: Debian's Chromium driven by Playwright against a real coordinator.

Without Chromium (or Playwright) these tests skip, unless ``FEDREC_REQUIRE_BROWSER=1``
(set by ``.ci/run``, which installs Chromium), which turns the skip into a failure.
Playwright's own browser downloads are not used: ``executable_path`` points at the
system's Chromium. Every page may reach 127.0.0.1 only; any other request is aborted
and recorded, so a page that needs the internet fails its test.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from fedrec.local_server import embedded_coordinator
from participant_sdk.wire import encode_update
from tests.factories import federation_body, random_deltas

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# validation ndcg@10 per model version of the federation the tests watch
NDCG = {0: 0.04, 1: 0.09, 2: 0.21, 3: 0.17}


def _chromium_path() -> str | None:
    configured = os.environ.get("FEDREC_CHROMIUM")
    candidates = (configured,) if configured else CHROMIUM_CANDIDATES
    return next((c for c in candidates if c and shutil.which(c)), None)


def _unavailable(reason: str) -> None:
    if os.environ.get("FEDREC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FEDREC_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


# module-scoped, not session-scoped: while Playwright's sync API runs, the main thread has a
# running event loop, which the async tests that follow (pytest-asyncio) must not inherit
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = _chromium_path()
    if path is None:
        _unavailable("Chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (the dev extra)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Watched:
    """A browser page whose console errors and off-machine requests are recorded."""

    page: Any
    base_url: str
    console_errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base_url + path)


@pytest.fixture
def watched(browser: Any, coordinator: Coordinator) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watched = Watched(context.new_page(), coordinator.url)

    def only_this_machine(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            watched.blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_machine)
    watched.page.on(
        "console",
        lambda msg: watched.console_errors.append(msg.text) if msg.type == "error" else None,
    )
    watched.page.on("pageerror", lambda exc: watched.console_errors.append(str(exc)))
    yield watched
    context.close()


@dataclass
class Coordinator:
    url: str
    admin_token: str
    federation_id: str
    participant_tokens: list[str]

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers=self.admin, timeout=30, **kwargs)


def _wait_closed(coordinator: Coordinator, number: int) -> None:
    fid = coordinator.federation_id
    deadline = time.monotonic() + 30
    while coordinator.api("GET", f"/v1/federations/{fid}/rounds/{number}").json()["state"] != (
        "closed"
    ):
        assert time.monotonic() < deadline, f"round {number} did not close"
        time.sleep(0.1)


def run_small_federation(url: str, admin_token: str) -> Coordinator:
    """Three rounds of two participants through the real API, evaluated on validation."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    body = federation_body(name="two shops", rounds={"min_participants": 2, "max_rounds": 3})
    created = httpx.post(f"{url}/v1/federations", json=body, headers=admin, timeout=30)
    assert created.status_code == 201, created.text
    fid = created.json()["id"]
    tokens = []
    for name in ("north", "south"):
        enrolled = httpx.post(
            f"{url}/v1/federations/{fid}/participants", json={"name": name}, headers=admin
        )
        assert enrolled.status_code == 201, enrolled.text
        tokens.append(enrolled.json()["token"])
    coordinator = Coordinator(url, admin_token, fid, tokens)
    for version in range(4):
        for offset, token in enumerate(tokens):
            value = NDCG[version] + 0.02 * offset
            metrics = {"ndcg@10": value, "hr@10": 3 * value, "recall@10": 2 * value}
            report = httpx.post(
                f"{url}/v1/federations/{fid}/models/{version}/evaluations",
                json={"split": "validation", "metrics": metrics, "num_users": 25},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert report.status_code == 201, report.text
        if version == 3:
            break
        number = version + 1
        for seed, token in enumerate(tokens):
            update = encode_update(
                random_deltas(seed + 10 * number),
                round=number,
                base_version=version,
                num_examples=40,
            )
            uploaded = httpx.put(
                f"{url}/v1/federations/{fid}/rounds/{number}/update",
                content=update,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/octet-stream",
                },
            )
            assert uploaded.status_code == 201, uploaded.text
        _wait_closed(coordinator, number)
    return coordinator


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """A real coordinator (uvicorn on 127.0.0.1) with one small, completed federation."""
    data_dir: Path = tmp_path_factory.mktemp("browser-coordinator")
    with embedded_coordinator(data_dir) as (url, admin_token):
        yield run_small_federation(url, admin_token)
