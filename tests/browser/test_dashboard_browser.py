"""The dashboard and the API docs in a real headless Chromium, with no internet."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import NDCG, Coordinator, Watched

# set to a path to refresh the README's screenshot (docs/img/dashboard.png)
SCREENSHOT_ENV = "FEDREC_DASHBOARD_SCREENSHOT"


def sign_in(watched: Watched, token: str) -> None:
    watched.goto("/")
    assert watched.page.url.endswith("/signin")  # no session: the sign-in form
    watched.page.fill("#token", token)
    watched.page.click("form.signin button[type=submit]")
    watched.page.wait_for_load_state()


def deployed_version(coordinator: Coordinator) -> int:
    fid = coordinator.federation_id
    return int(coordinator.api("GET", f"/v1/federations/{fid}").json()["deployed_version"])


def test_pages_load_and_draw_the_curve_from_real_rounds(
    watched: Watched, coordinator: Coordinator
) -> None:
    sign_in(watched, coordinator.admin_token)
    page = watched.page
    assert page.url == coordinator.url + "/"
    page.click(f"a[href='/federations/{coordinator.federation_id}']")
    page.wait_for_load_state()
    assert page.locator("#rounds tbody tr").count() == 3
    assert page.locator("#participants tbody tr").count() == 2
    assert page.locator("#versions tbody tr").count() == 4

    chart = page.locator("svg.chart[data-metric='ndcg@10']")
    points = chart.locator("circle.point")
    values = [float(points.nth(i).get_attribute("data-value") or "nan") for i in range(4)]
    # each version's figure is the users-weighted mean of the two participants' reports
    assert values == pytest.approx([NDCG[v] + 0.01 for v in range(4)])
    box = chart.locator("polyline.curve").bounding_box()
    assert box is not None
    assert box["width"] > 100  # drawn across the plot, not collapsed
    assert box["height"] > 20
    # the best version on validation (2) was deployed by the "best" policy, and is marked
    marked = chart.locator("circle.point.deployed")
    assert marked.count() == 1
    assert marked.get_attribute("data-version") == str(deployed_version(coordinator))
    # a higher figure is drawn higher: version 2's point sits above version 1's
    assert float(points.nth(2).get_attribute("cy") or 0) < float(
        points.nth(1).get_attribute("cy") or 0
    )
    page.click(f"a[href='/federations/{coordinator.federation_id}/lineage']")
    assert "Chain verified: 4 versions" in page.locator("#chain-result").inner_text()

    if os.environ.get(SCREENSHOT_ENV):
        page.go_back()
        page.wait_for_load_state()
        page.screenshot(path=str(Path(os.environ[SCREENSHOT_ENV])), full_page=True)
    assert watched.console_errors == []
    assert watched.blocked == []


def test_the_token_is_required(watched: Watched, coordinator: Coordinator) -> None:
    watched.goto(f"/federations/{coordinator.federation_id}")
    assert watched.page.url.endswith("/signin")
    assert watched.page.locator("#token").get_attribute("type") == "password"
    # a script without token or cookie gets a problem, not a page
    response = watched.page.request.get(coordinator.url + "/")
    assert response.status == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    # a wrong token is refused and sets no session
    watched.page.fill("#token", "not-a-token")
    watched.page.click("form.signin button[type=submit]")
    assert "unknown token" in watched.page.locator(".error").inner_text()
    assert watched.page.context.cookies() == []
    assert watched.console_errors == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]


def test_session_cookie_is_http_only_and_strict(watched: Watched, coordinator: Coordinator) -> None:
    sign_in(watched, coordinator.admin_token)
    (cookie,) = watched.page.context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert coordinator.admin_token not in cookie["value"]
    # scripts in the page cannot read it
    assert "fedrec_session" not in watched.page.evaluate("document.cookie")


def test_promote_needs_the_csrf_token(watched: Watched, coordinator: Coordinator) -> None:
    sign_in(watched, coordinator.admin_token)
    page = watched.page
    before = deployed_version(coordinator)
    target = 1 if before != 1 else 3
    page.goto(f"{coordinator.url}/federations/{coordinator.federation_id}")
    form = f"#versions form:has(button[data-version='{target}'])"
    # a forged post: the same form without its CSRF token, sent with the session cookie
    page.eval_on_selector(form, "f => f.querySelector('[name=csrf_token]').remove()")
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.click(f"{form} button")
    assert refused.value.status == 403
    assert refused.value.json()["type"] == "urn:fedrec:problem:csrf-failed"
    assert deployed_version(coordinator) == before
    # the page's own form (with the token) rolls back / promotes
    page.goto(f"{coordinator.url}/federations/{coordinator.federation_id}")
    page.click(f"{form} button")
    page.wait_for_load_state()
    assert deployed_version(coordinator) == target
    live = page.locator("#versions tr.live td").first.inner_text()
    assert live.startswith(f"v{target}")
    marked = page.locator("svg.chart[data-metric='ndcg@10'] circle.point.deployed")
    assert marked.get_attribute("data-version") == str(target)
    # sign out (a CSRF-checked post too) ends the session
    page.click("header form button")
    page.wait_for_load_state()
    assert page.url.endswith("/signin")
    assert httpx.get(coordinator.url + "/", timeout=10).status_code == 401


def test_docs_render_an_operation_offline(watched: Watched) -> None:
    watched.goto("/docs")
    operation = watched.page.locator(".opblock-summary-path[data-path='/v1/federations']")
    operation.first.wait_for(timeout=20_000)
    assert operation.count() >= 2  # GET and POST /v1/federations
    assert watched.console_errors == []
    watched.goto("/redoc")
    watched.page.locator("[data-section-id^='operation/']").first.wait_for(timeout=20_000)
    assert watched.page.locator("[data-section-id^='operation/']").count() > 10
    # ReDoc's badge logo is a CDN image: the page's policy stops it in the browser
    assert watched.blocked == []
    assert all("Content Security Policy" in e for e in watched.console_errors)
