"""The dashboard's pages over HTTP (both backends): who sees what, sign-in, CSRF, curves.

The browser tests (tests/browser/) check the same pages rendered in Chromium.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator.api.dashboard.sessions import COOKIE_NAME
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    evaluate,
    put_update,
    tamper_blob,
    update_bytes,
    wait_round_closed,
)

HTML = {"Accept": "text/html"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# validation ndcg@10 per version: version 2 is the best, so the "best" policy deploys it
NDCG = {0: 0.05, 1: 0.10, 2: 0.30, 3: 0.20}


def run_federation(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    """Three rounds with two participants reporting four metrics per version, completed."""
    fid = create_federation(client, admin, name="shops", rounds={"max_rounds": 3})["id"]
    participants = [enrol(client, admin, fid, name) for name in ("north", "south")]
    for version in range(4):
        for offset, (_, headers) in enumerate(participants):
            value = NDCG[version] + 0.01 * offset  # the two reports differ, as real ones do
            metrics = {
                "ndcg@10": value,
                "hr@10": 2 * value,
                "precision@10": value / 5,
                "recall@10": 1.5 * value,
            }
            assert evaluate(client, fid, version, headers, metrics=metrics).status_code == 201
        if version == 3:
            break
        number = version + 1
        for seed, (_, headers) in enumerate(participants):
            body = update_bytes(round=number, base_version=version, seed=seed)
            assert put_update(client, fid, number, body, headers).status_code == 201
        assert wait_round_closed(client, fid, number, admin)["state"] == "closed"
    fed = client.get(f"/v1/federations/{fid}", headers=admin).json()
    assert (fed["state"], fed["deployed_version"]) == ("completed", 2)
    return {"id": fid, "participants": participants}


def sign_in(client: TestClient, token: str) -> str:
    """Post the sign-in form; return the CSRF token the next page carries."""
    response = client.post(
        "/signin", content=f"token={token}", headers={**FORM, **HTML}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    page = client.get(response.headers["location"], headers=HTML)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def bearer(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


class TestAccess:
    def test_browser_without_session_is_sent_to_sign_in(self, client: TestClient) -> None:
        response = client.get("/", headers=HTML, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/signin"
        form = client.get("/signin")
        assert form.status_code == 200
        assert 'type="password"' in form.text
        assert 'action="/signin"' in form.text

    def test_script_without_token_gets_401_problem(self, client: TestClient) -> None:
        assert_problem(client.get("/"), 401, "unauthorized")
        assert_problem(client.get("/federations/x"), 401, "unauthorized")

    def test_unknown_bearer_token_is_refused(self, client: TestClient) -> None:
        response = client.get("/", headers={"Authorization": "Bearer nope", **HTML})
        assert_problem(response, 401, "unauthorized")

    def test_admin_bearer_sees_every_federation(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        first = create_federation(client, admin_headers, name="alpha")["id"]
        second = create_federation(client, admin_headers, name="beta")["id"]
        page = client.get("/", headers=admin_headers)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        # no script, no other origin, never framed (the promote buttons cannot be clickjacked)
        policy = page.headers["content-security-policy"]
        assert "script-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert f'href="/federations/{first}"' in page.text
        assert f'href="/federations/{second}"' in page.text

    def test_participant_sees_only_its_federation_read_only(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = run_federation(client, admin_headers)
        other = create_federation(client, admin_headers, name="other")["id"]
        _, participant = fed["participants"][0]
        index = client.get("/", headers=participant)
        assert f"/federations/{fed['id']}" in index.text
        assert f"/federations/{other}" not in index.text
        page = client.get(f"/federations/{fed['id']}", headers=participant)
        assert page.status_code == 200
        assert "read-only" in page.text
        assert 'id="participants"' not in page.text  # the participant list is admin-only
        assert "/deployment" not in page.text  # no promote or roll-back forms
        assert_problem(client.get(f"/federations/{other}", headers=participant), 403, "forbidden")

    def test_names_are_escaped(self, client: TestClient, admin_headers: dict[str, str]) -> None:
        fid = create_federation(client, admin_headers, name="<script>alert(1)</script>")["id"]
        for path in ("/", f"/federations/{fid}"):
            page = client.get(path, headers=admin_headers).text
            assert "<script>" not in page
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page

    def test_unknown_federation_is_404(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        response = client.get("/federations/nope", headers=admin_headers)
        assert_problem(response, 404, "federation-not-found")


class TestFederationPage:
    def test_rounds_participants_versions_and_deployment(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = run_federation(client, admin_headers)
        page = client.get(f"/federations/{fed['id']}", headers=admin_headers).text
        rounds = page.split('id="rounds"')[1].split("</section>")[0]
        assert rounds.count('<span class="state closed">closed</span>') == 3
        assert "v2 → v3" in rounds
        participants = page.split('id="participants"')[1].split("</section>")[0]
        for pid, _ in fed["participants"]:
            assert pid in participants
        # both uploaded and reported: "last seen" is a timestamp, not the never-seen dash
        assert participants.count("<td>–</td>") == 2  # only the two empty "revoked" cells
        versions = page.split('id="versions"')[1].split("</section>")[0]
        assert versions.count("<code title=") == 8  # sha256 and chain of versions 0..3
        assert "v2 <strong>live</strong>" in versions
        assert "Roll back" in versions
        assert "Promote" in versions
        deployment = page.split('id="deployment"')[1].split("</section>")[0]
        assert "policy:best" in deployment
        assert 'id="deployed-version">2<' in page

    def test_revoked_participant_is_shown_revoked(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fid = create_federation(client, admin_headers)["id"]
        pid, _ = enrol(client, admin_headers, fid, "gone")
        client.delete(f"/v1/federations/{fid}/participants/{pid}", headers=admin_headers)
        page = client.get(f"/federations/{fid}", headers=admin_headers).text
        participants = page.split('id="participants"')[1].split("</section>")[0]
        assert '<span class="state revoked">revoked</span>' in participants

    def test_metric_curves_from_the_reported_figures(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = run_federation(client, admin_headers)
        page = client.get(f"/federations/{fed['id']}", headers=admin_headers).text
        charts = re.findall(r'<svg class="chart" data-metric="([^"]+)"', page)
        assert charts == ["hr@10", "ndcg@10", "precision@10", "recall@10"]
        ndcg = page.split('data-metric="ndcg@10"')[1].split("</svg>")[0]
        values = [float(v) for v in re.findall(r'data-value="([^"]+)"', ndcg)]
        # aggregated: the mean of the two participants' figures (10 users each)
        assert values == pytest.approx([NDCG[v] + 0.005 for v in range(4)])
        assert re.findall(r'class="point deployed"[^>]*data-version="(\d+)"', ndcg) == ["2"]
        points = re.search(r'<polyline class="curve" points="([^"]+)"', ndcg)
        assert points
        assert len(points.group(1).split()) == 4

    def test_privacy_spent_is_shown(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        dp = {"clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}
        fid = create_federation(
            client,
            admin_headers,
            strategy={"name": "fedavg", "weighting": "uniform", "normalization": "total"},
            privacy={"dp": dp},
        )["id"]
        page = client.get(f"/federations/{fid}", headers=admin_headers).text
        assert "ε = 0 at δ = 1e-05 after 0 rounds (PLD, sampling rate q = 1)" in page
        plain = create_federation(client, admin_headers)["id"]
        assert (
            "no differential privacy"
            in client.get(f"/federations/{plain}", headers=admin_headers).text
        )

    def test_chain_check_passes_on_an_intact_chain(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = run_federation(client, admin_headers)
        page = client.get(f"/federations/{fed['id']}/lineage", headers=admin_headers)
        assert page.status_code == 200
        assert "Chain verified: 4 versions" in page.text

    def test_chain_check_names_a_tampered_version(
        self, client: TestClient, admin_headers: dict[str, str], app: Any
    ) -> None:
        fed = run_federation(client, admin_headers)
        sha = client.get(f"/v1/federations/{fed['id']}/models/2", headers=admin_headers).json()
        tamper_blob(app.state.context, sha["sha256"])
        page = client.get(f"/federations/{fed['id']}/lineage", headers=admin_headers)
        assert "Chain broken at version 2" in page.text


class TestSignIn:
    def test_sign_in_sets_a_strict_http_only_cookie(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        token = bearer(admin_headers)
        response = client.post(
            "/signin", content=f"token={token}", headers={**FORM, **HTML}, follow_redirects=False
        )
        assert response.status_code == 303
        assert token not in response.headers["location"]
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/" in cookie
        assert token not in cookie
        assert client.get("/", headers=HTML).status_code == 200

    def test_cookie_is_secure_over_https(self, app: Any, admin_headers: dict[str, str]) -> None:
        with TestClient(app, base_url="https://testserver") as https:
            response = https.post(
                "/signin",
                content=f"token={bearer(admin_headers)}",
                headers=FORM,
                follow_redirects=False,
            )
        assert response.status_code == 303
        assert "; secure" in response.headers["set-cookie"].lower()

    def test_wrong_token_shows_the_form_again(self, client: TestClient) -> None:
        response = client.post("/signin", content="token=wrong", headers={**FORM, **HTML})
        assert response.status_code == 401
        assert "unknown token" in response.text
        assert COOKIE_NAME not in response.headers.get("set-cookie", "")

    def test_wrong_token_from_a_script_is_a_problem(self, client: TestClient) -> None:
        assert_problem(client.post("/signin", content="token=", headers=FORM), 401, "unauthorized")

    def test_a_json_sign_in_is_refused(self, client: TestClient) -> None:
        response = client.post("/signin", json={"token": "x"})
        assert_problem(response, 415, "unsupported-media-type")

    def test_tampered_cookie_is_not_a_session(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        sign_in(client, bearer(admin_headers))
        value = client.cookies[COOKIE_NAME]
        client.cookies.set(COOKIE_NAME, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
        assert client.get("/", headers=HTML, follow_redirects=False).status_code == 303

    def test_revoking_a_participant_ends_its_session(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fid = create_federation(client, admin_headers)["id"]
        pid, participant = enrol(client, admin_headers, fid)
        sign_in(client, bearer(participant))
        assert client.get(f"/federations/{fid}", headers=HTML).status_code == 200
        client.delete(f"/v1/federations/{fid}/participants/{pid}", headers=admin_headers)
        response = client.get(f"/federations/{fid}", headers=HTML, follow_redirects=False)
        assert response.status_code == 303

    def test_sign_out_needs_the_csrf_token_and_ends_the_session(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        csrf = sign_in(client, bearer(admin_headers))
        refused = client.post("/signout", content="", headers=FORM, follow_redirects=False)
        assert_problem(refused, 403, "csrf-failed")
        assert client.get("/", headers=HTML).status_code == 200  # still signed in
        response = client.post(
            "/signout", content=f"csrf_token={csrf}", headers=FORM, follow_redirects=False
        )
        assert response.status_code == 303
        assert client.get("/", headers=HTML, follow_redirects=False).status_code == 303


class TestPromote:
    def _signed_in_admin(self, client: TestClient, admin: dict[str, str]) -> tuple[str, str]:
        fid = run_federation(client, admin)["id"]
        return fid, sign_in(client, bearer(admin))

    def _deployed(self, client: TestClient, fid: str, admin: dict[str, str]) -> int:
        return int(client.get(f"/v1/federations/{fid}", headers=admin).json()["deployed_version"])

    def test_roll_back_with_the_csrf_token(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fid, csrf = self._signed_in_admin(client, admin_headers)
        response = client.post(
            f"/federations/{fid}/deployment",
            content=f"version=1&csrf_token={csrf}",
            headers=FORM,
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"/federations/{fid}#deployment"
        assert self._deployed(client, fid, admin_headers) == 1
        history = client.get(f"/v1/federations/{fid}/deployment", headers=admin_headers).json()
        assert (history["history"][-1]["reason"], history["deployed_by"]) == ("rollback", "admin")

    @pytest.mark.parametrize("csrf_field", ["", "csrf_token=forged&"])
    def test_cookie_post_without_a_valid_csrf_token_is_refused(
        self, client: TestClient, admin_headers: dict[str, str], csrf_field: str
    ) -> None:
        fid, _ = self._signed_in_admin(client, admin_headers)
        response = client.post(
            f"/federations/{fid}/deployment", content=f"{csrf_field}version=1", headers=FORM
        )
        assert_problem(response, 403, "csrf-failed")
        assert self._deployed(client, fid, admin_headers) == 2

    @pytest.mark.parametrize("origin", ["https://evil.example", "null"])
    def test_cross_site_origin_is_refused_even_with_the_token(
        self, client: TestClient, admin_headers: dict[str, str], origin: str
    ) -> None:
        fid, csrf = self._signed_in_admin(client, admin_headers)
        response = client.post(
            f"/federations/{fid}/deployment",
            content=f"version=1&csrf_token={csrf}",
            headers={**FORM, "Origin": origin},
        )
        assert_problem(response, 403, "csrf-failed")
        assert self._deployed(client, fid, admin_headers) == 2
        same_site = client.post(
            f"/federations/{fid}/deployment",
            content=f"version=1&csrf_token={csrf}",
            headers={**FORM, "Origin": "http://testserver"},
            follow_redirects=False,
        )
        assert same_site.status_code == 303
        assert self._deployed(client, fid, admin_headers) == 1

    def test_a_form_with_too_many_fields_is_a_validation_problem(self, client: TestClient) -> None:
        body = "&".join(f"f{i}=x" for i in range(50))
        response = client.post("/signin", content=body, headers=FORM)
        assert_problem(response, 422, "validation-error")

    def test_a_script_with_the_bearer_token_needs_no_csrf_token(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fid = run_federation(client, admin_headers)["id"]
        response = client.post(
            f"/federations/{fid}/deployment",
            content="version=3",
            headers={**FORM, **admin_headers},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert self._deployed(client, fid, admin_headers) == 3

    def test_a_participant_may_not_promote(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = run_federation(client, admin_headers)
        _, participant = fed["participants"][0]
        response = client.post(
            f"/federations/{fed['id']}/deployment",
            content="version=1",
            headers={**FORM, **participant},
        )
        assert_problem(response, 403, "forbidden")

    def test_bad_version_is_a_validation_problem(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fid = create_federation(client, admin_headers)["id"]
        response = client.post(
            f"/federations/{fid}/deployment", content="version=x", headers={**FORM, **admin_headers}
        )
        assert assert_problem(response, 422, "validation-error")["field"] == "version"
        missing = client.post(
            f"/federations/{fid}/deployment", content="version=9", headers={**FORM, **admin_headers}
        )
        assert_problem(missing, 404, "model-version-not-found")

    @pytest.mark.parametrize("version", ["%C2%B2", "9" * 5000, str(2**63)])
    def test_a_version_the_database_cannot_hold_is_a_validation_problem(
        self, client: TestClient, admin_headers: dict[str, str], version: str
    ) -> None:
        """ "²" passes str.isdigit and int() refuses it; huge numbers overflow the column."""
        fid = create_federation(client, admin_headers)["id"]
        response = client.post(
            f"/federations/{fid}/deployment",
            content=f"version={version}",
            headers={**FORM, **admin_headers},
        )
        assert assert_problem(response, 422, "validation-error")["field"] == "version"


class TestOfflineDocs:
    @pytest.mark.parametrize(
        ("page", "assets"),
        [
            ("/docs", ["/docs-static/swagger-ui-bundle.js", "/docs-static/swagger-ui.css"]),
            ("/redoc", ["/docs-static/redoc.standalone.js"]),
        ],
    )
    def test_pages_load_their_assets_from_the_coordinator(
        self, client: TestClient, page: str, assets: list[str]
    ) -> None:
        html = client.get(page).text
        for asset in assets:
            assert f'"{asset}"' in html
            response = client.get(asset)
            assert response.status_code == 200
            assert len(response.content) > 100_000  # the real distribution, not a stub
        # nothing is fetched from another host (a CDN or web fonts)
        assert re.findall(r'(?:src|href)="(https?:)?//', html) == []

    def test_redoc_may_load_images_from_the_coordinator_only(self, client: TestClient) -> None:
        # ReDoc's bundle fetches its badge logo from a CDN; the policy keeps the browser here
        assert client.get("/redoc").headers["content-security-policy"] == "img-src 'self' data:"
