"""/v1/federations/{id}/models: version metadata and weights download (ETag, 304, 404)."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from tests.factories import assert_problem, create_federation


class TestWeights:
    def test_etag_and_304(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        url = f"/v1/federations/{fed['id']}/models/latest/weights"
        response = client.get(url, headers=admin_headers)
        assert response.headers["content-type"] == "application/octet-stream"
        digest = hashlib.sha256(response.content).hexdigest()
        assert response.headers["etag"] == f'"{digest}"'
        cached = client.get(url, headers={**admin_headers, "If-None-Match": f'"{digest}"'})
        assert cached.status_code == 304
        assert cached.content == b""
        stale = client.get(url, headers={**admin_headers, "If-None-Match": '"abc"'})
        assert stale.status_code == 200

    def test_unknown_version_404(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        response = client.get(
            f"/v1/federations/{fed['id']}/models/9/weights", headers=admin_headers
        )
        assert_problem(response, 404, "model-version-not-found")
