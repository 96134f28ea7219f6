"""/v1/federations/{id}/deployment: the deploy policy (best, latest, none), promote, roll back."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    evaluate,
    put_update,
    update_bytes,
    wait_round_closed,
)


class TestDeployment:
    def _two_versions(
        self, client: TestClient, admin: dict, final_score: float = 0.3, **policy: object
    ) -> tuple[str, dict]:
        fid = create_federation(client, admin, rounds={"max_rounds": 2}, **policy)["id"]
        _, p = enrol(client, admin, fid)
        for number in (1, 2):
            evaluate(client, fid, number - 1, p, metrics={"ndcg@10": 0.5 if number == 2 else 0.1})
            put_update(
                client,
                fid,
                number,
                update_bytes(round=number, base_version=number - 1, seed=number),
                p,
            )
            assert wait_round_closed(client, fid, number, admin)["state"] == "closed"
        # the federation is evaluating until the final version's figures are in
        assert client.get(f"/v1/federations/{fid}", headers=admin).json()["state"] == "evaluating"
        assert evaluate(client, fid, 2, p, metrics={"ndcg@10": final_score}).status_code == 201
        return fid, p

    def test_nothing_deployed_404(self, client: TestClient, admin_headers: dict) -> None:
        fid = create_federation(client, admin_headers)["id"]
        assert_problem(
            client.get(f"/v1/federations/{fid}/deployment", headers=admin_headers), 404, "not-found"
        )

    def test_best_policy_deploys_best_validated_version(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid, p = self._two_versions(client, admin_headers)
        fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert fed["state"] == "completed"
        deployment = client.get(f"/v1/federations/{fid}/deployment", headers=p).json()
        assert deployment["version"] == 1  # version 1 scored 0.5, version 0 scored 0.1
        assert deployment["policy"] == "best"
        assert deployment["deployed_by"] == "policy:best"
        assert fed["deployed_version"] == 1

    def test_best_policy_deploys_the_final_version_when_it_is_best(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        # before the final evaluation existed, version 2 (the last) was never evaluated
        fid, p = self._two_versions(client, admin_headers, final_score=0.7)
        fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert (fed["state"], fed["latest_version"], fed["deployed_version"]) == (
            "completed",
            2,
            2,
        )
        deployment = client.get(f"/v1/federations/{fid}/deployment", headers=p).json()
        assert deployment["history"][-1]["metric_value"] == 0.7

    def test_latest_policy(self, client: TestClient, admin_headers: dict) -> None:
        fid, _ = self._two_versions(client, admin_headers, deploy={"policy": "latest"})
        assert (
            client.get(f"/v1/federations/{fid}/deployment", headers=admin_headers).json()["version"]
            == 2
        )

    def test_none_policy_then_promote_and_roll_back(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid, _ = self._two_versions(client, admin_headers, deploy={"policy": "none"})
        url = f"/v1/federations/{fid}/deployment"
        assert client.get(url, headers=admin_headers).status_code == 404
        promoted = client.post(url, json={"version": 2}, headers=admin_headers).json()
        assert (promoted["version"], promoted["history"][-1]["reason"]) == (2, "promote")
        rolled = client.post(url, json={"version": 0}, headers=admin_headers).json()
        assert rolled["version"] == 0
        assert [(h["version"], h["reason"], h["actor"]) for h in rolled["history"]] == [
            (2, "promote", "admin"),
            (0, "rollback", "admin"),
        ]
        assert_problem(
            client.post(url, json={"version": 9}, headers=admin_headers),
            404,
            "model-version-not-found",
        )
