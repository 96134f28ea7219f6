"""/v1/federations/{id}/participants: enrol (token shown once), list, me, revoke, re-enrol."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.factories import assert_problem, create_federation, enrol


class TestMe:
    def test_me_is_the_calling_participant(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(client, admin_headers)
        pid, participant = enrol(client, admin_headers, fed["id"], "shop")
        enrol(client, admin_headers, fed["id"], "merchant")
        me = client.get(f"/v1/federations/{fed['id']}/participants/me", headers=participant)
        assert me.status_code == 200, me.text
        assert (me.json()["id"], me.json()["name"], me.json()["state"]) == (pid, "shop", "active")
        assert "token" not in me.json()


class TestRevoked:
    def test_revoked_token_stops_working(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(client, admin_headers)
        pid, participant = enrol(client, admin_headers, fed["id"])
        assert client.get(f"/v1/federations/{fed['id']}", headers=participant).status_code == 200
        revoked = client.delete(
            f"/v1/federations/{fed['id']}/participants/{pid}", headers=admin_headers
        )
        assert revoked.status_code == 200
        assert revoked.json()["state"] == "revoked"
        response = client.get(f"/v1/federations/{fed['id']}", headers=participant)
        assert_problem(response, 401, "participant-revoked")

    def test_reenrol_issues_a_new_token(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(client, admin_headers)
        pid, old = enrol(client, admin_headers, fed["id"])
        client.delete(f"/v1/federations/{fed['id']}/participants/{pid}", headers=admin_headers)
        response = client.post(
            f"/v1/federations/{fed['id']}/participants/{pid}/reenrol", headers=admin_headers
        )
        assert response.status_code == 200
        assert response.json()["state"] == "active"
        new = {"Authorization": f"Bearer {response.json()['token']}"}
        assert client.get(f"/v1/federations/{fed['id']}", headers=new).status_code == 200
        assert_problem(client.get(f"/v1/federations/{fed['id']}", headers=old), 401, "unauthorized")


class TestTokens:
    def test_token_shown_once_and_stored_hashed(
        self, client: TestClient, app: FastAPI, admin_headers: dict[str, str]
    ) -> None:
        from sqlalchemy import select

        from coordinator.store.models import Participant

        fed = create_federation(client, admin_headers)
        response = client.post(
            f"/v1/federations/{fed['id']}/participants", json={"name": "a"}, headers=admin_headers
        )
        token = response.json()["token"]
        # >= 256 bits of randomness: 32 bytes urlsafe-base64 are 43 characters
        assert len(token.split("_", 1)[1]) >= 43
        listing = client.get(f"/v1/federations/{fed['id']}/participants", headers=admin_headers)
        assert "token" not in listing.json()["items"][0]
        with app.state.context.sessions() as session:
            stored = session.scalars(select(Participant.token_hash)).all()
        assert token not in stored
        assert all(len(h) == 64 for h in stored)
