"""/v1/federations/{id}/models: version metadata and weights download (ETag, 304, 404)."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from tests.factories import assert_problem, create_federation, enrol


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


class TestCachedDownloads:
    """A version's record and bytes are cached per process after the first download."""

    def test_the_second_download_is_the_same_and_still_authorised(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = create_federation(client, admin_headers)["id"]
        other = create_federation(client, admin_headers)["id"]
        _, mine = enrol(client, admin_headers, fid, "mine")
        _, theirs = enrol(client, admin_headers, other, "theirs")
        url = f"/v1/federations/{fid}/models/0/weights"
        first = client.get(url, headers=mine)
        assert first.status_code == 200, first.text
        app_ctx = client.app.state.context  # type: ignore[attr-defined]
        assert app_ctx.served_versions.record(fid, 0) is not None
        again = client.get(url, headers=mine)
        assert (again.content, again.headers["ETag"]) == (first.content, first.headers["ETag"])
        assert again.headers["X-Model-Manifest"] == first.headers["X-Model-Manifest"]
        # the cached record does not skip the federation check
        assert_problem(client.get(url, headers=theirs), 403, "forbidden")
        not_modified = client.get(url, headers={**mine, "If-None-Match": first.headers["ETag"]})
        assert not_modified.status_code == 304
