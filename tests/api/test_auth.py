"""Authentication and authorisation: who may call what."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.factories import (
    assert_problem,
    blob_count,
    create_federation,
    enrol,
    put_update,
    stored_update_count,
    update_bytes,
)


class TestNoToken:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/v1/federations"),
            ("POST", "/v1/federations"),
            ("GET", "/v1/federations/x/rounds/current"),
            ("GET", "/v1/federations/x/models/latest/weights"),
        ],
    )
    def test_401(self, client: TestClient, method: str, path: str) -> None:
        response = client.request(method, path)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"

    def test_upload_without_token_stores_nothing(
        self, client: TestClient, app: FastAPI, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(client, admin_headers)
        blobs_before = blob_count(app.state.context)
        response = put_update(client, fed["id"], 1, update_bytes(), {})
        assert_problem(response, 401, "unauthorized")
        assert stored_update_count(app.state.context) == 0
        assert blob_count(app.state.context) == blobs_before


class TestBadToken:
    def test_unknown_token_401(self, client: TestClient) -> None:
        response = client.get("/v1/federations", headers={"Authorization": "Bearer frp_nope"})
        assert_problem(response, 401, "unauthorized")

    def test_upload_with_bad_token_stores_nothing(
        self, client: TestClient, app: FastAPI, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(client, admin_headers)
        response = put_update(
            client, fed["id"], 1, update_bytes(), {"Authorization": "Bearer frp_forged"}
        )
        assert_problem(response, 401, "unauthorized")
        assert stored_update_count(app.state.context) == 0


class TestParticipantOnAdminRoute:
    def test_create_federation_403(self, client: TestClient, admin_headers: dict[str, str]) -> None:
        fed = create_federation(client, admin_headers)
        _, participant = enrol(client, admin_headers, fed["id"])
        response = client.post(
            "/v1/federations",
            json={"name": "x", "model": {"kind": "mf", "num_items": 3, "dim": 2}},
            headers=participant,
        )
        assert_problem(response, 403, "forbidden")
        listing = client.get("/v1/federations", headers=admin_headers).json()
        assert len(listing["items"]) == 1

    @pytest.mark.parametrize(
        ("method", "suffix", "json"),
        [
            ("POST", "/participants", {"name": "intruder"}),
            ("GET", "/participants", None),
            ("POST", "/rounds/1/aggregate", None),
            ("POST", "/deployment", {"version": 0}),
        ],
    )
    def test_admin_routes_403(
        self,
        client: TestClient,
        admin_headers: dict[str, str],
        method: str,
        suffix: str,
        json: dict[str, object] | None,
    ) -> None:
        fed = create_federation(client, admin_headers)
        _, participant = enrol(client, admin_headers, fed["id"])
        response = client.request(
            method, f"/v1/federations/{fed['id']}{suffix}", json=json, headers=participant
        )
        assert_problem(response, 403, "forbidden")
        participants = client.get(
            f"/v1/federations/{fed['id']}/participants", headers=admin_headers
        ).json()["items"]
        assert [p["name"] for p in participants] == ["shop"]


class TestOtherFederation:
    def test_read_other_federation_403(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        mine = create_federation(client, admin_headers, name="mine")
        other = create_federation(client, admin_headers, name="other")
        _, participant = enrol(client, admin_headers, mine["id"])
        for path in ("", "/rounds/current", "/models", "/models/0/weights", "/catalog"):
            response = client.get(f"/v1/federations/{other['id']}{path}", headers=participant)
            assert_problem(response, 403, "forbidden")

    def test_upload_to_other_federation_stores_nothing(
        self, client: TestClient, app: FastAPI, admin_headers: dict[str, str]
    ) -> None:
        mine = create_federation(client, admin_headers, name="mine")
        other = create_federation(client, admin_headers, name="other")
        _, participant = enrol(client, admin_headers, mine["id"])
        response = put_update(client, other["id"], 1, update_bytes(), participant)
        assert_problem(response, 403, "forbidden")
        assert stored_update_count(app.state.context) == 0

    def test_participant_lists_only_own_federation(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        mine = create_federation(client, admin_headers, name="mine")
        create_federation(client, admin_headers, name="other")
        _, participant = enrol(client, admin_headers, mine["id"])
        items = client.get("/v1/federations", headers=participant).json()["items"]
        assert [f["id"] for f in items] == [mine["id"]]
