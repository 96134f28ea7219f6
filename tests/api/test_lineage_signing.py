"""History that cannot be rewritten (issue 12, finding 5), on every backend.

Each version's manifest is signed with the coordinator's Ed25519 key, which the
database does not hold. Before signing, replacing versions and recomputing the hash
chain, deleting the newest version, editing ``created_at``/``round_number`` or an update
blob all passed ``verify-lineage``; each is now reported.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import delete, select, update

from coordinator.app import build_context
from coordinator.config import Settings
from coordinator.domain.context import Context
from coordinator.domain.lineage import chain_hash, verify_lineage
from coordinator.domain.signing import LineageSigner, generate_signing_key_pem
from coordinator.store.models import Federation, ModelVersion
from participant_sdk import Client
from participant_sdk.wire import (
    MANIFEST_HEADER,
    SIGNATURE_HEADER,
    encode_weights,
    verify_manifest,
)
from tests.factories import (
    DIM,
    NUM_ITEMS,
    create_federation,
    enrol,
    put_update,
    tamper_blob,
    update_bytes,
    wait_round_closed,
)

ROUNDS = 3


@pytest.fixture
def history(client: TestClient, admin_headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A federation with versions 0..3, each aggregated from one participant's update."""
    fid = create_federation(client, admin_headers)["id"]
    _, headers = enrol(client, admin_headers, fid)
    for number in range(1, ROUNDS + 1):
        body = update_bytes(round=number, base_version=number - 1, seed=number)
        assert put_update(client, fid, number, body, headers).status_code == 201
        # the only participant's upload completes the round: the worker aggregates it
        assert wait_round_closed(client, fid, number, admin_headers)["result_version"] == number
    return fid, headers


def _ctx(app: FastAPI) -> Context:
    ctx: Context = app.state.context
    return ctx


def _edit(ctx: Context, fid: str, version: int, **values: Any) -> None:
    with ctx.sessions.begin() as session:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.federation_id == fid, ModelVersion.version == version)
            .values(**values)
        )


def _row(ctx: Context, fid: str, version: int) -> ModelVersion:
    with ctx.read_sessions() as session:
        row = session.scalars(
            select(ModelVersion).where(
                ModelVersion.federation_id == fid, ModelVersion.version == version
            )
        ).one()
        session.expunge(row)
        return row


class TestSigned:
    def test_every_version_is_signed_and_served(
        self,
        client: TestClient,
        admin_headers: dict[str, str],
        history: tuple[str, dict[str, str]],
    ) -> None:
        fid, participant = history
        key = client.get("/v1/signing-key", headers=participant).json()
        assert key["algorithm"] == "Ed25519"
        versions = client.get(f"/v1/federations/{fid}/models", headers=admin_headers).json()
        assert [v["version"] for v in versions["items"]] == list(range(ROUNDS + 1))
        for served in versions["items"]:
            manifest_b64 = base64.b64encode(served["manifest"].encode()).decode()
            fields = verify_manifest(manifest_b64, served["signature"], key["public_key"])
            assert fields["federation_id"] == fid
            assert fields["version"] == served["version"]
            assert fields["versions"] == served["version"] + 1
            assert fields["sha256"] == served["sha256"]
            assert fields["chain_hash"] == served["chain_hash"]
            assert fields["round"] == served["round"]
            download = client.get(
                f"/v1/federations/{fid}/models/{served['version']}/weights", headers=participant
            )
            assert download.headers[MANIFEST_HEADER] == manifest_b64
            assert download.headers[SIGNATURE_HEADER] == served["signature"]

    def test_sdk_pins_the_key_and_verifies_real_downloads(
        self, client: TestClient, history: tuple[str, dict[str, str]]
    ) -> None:
        fid, participant = history
        token = participant["Authorization"].removeprefix("Bearer ")
        sdk = Client("http://testserver", token, http_client=client)
        latest = sdk.models.weights(fid, "latest")
        assert set(latest) == {"item_factors", "item_bias"}
        assert (
            sdk.signing_key
            == client.get("/v1/signing-key", headers=participant).json()["public_key"]
        )

    def test_untouched_history_verifies(
        self, app: FastAPI, history: tuple[str, dict[str, str]]
    ) -> None:
        report = verify_lineage(_ctx(app), history[0])
        assert report.ok, report.reason
        assert report.checked == ROUNDS + 1

    def test_signing_key_needs_a_token(self, client: TestClient) -> None:
        assert client.get("/v1/signing-key").status_code == 401


class TestTamperingIsDetected:
    def test_versions_replaced_and_chain_recomputed(
        self, app: FastAPI, history: tuple[str, dict[str, str]]
    ) -> None:
        fid, _ = history
        ctx = _ctx(app)
        parent_chain = _row(ctx, fid, 1).chain_hash
        for version in (2, 3):  # other weights, with a chain that checks out
            row = _row(ctx, fid, version)
            forged = encode_weights(
                {
                    "item_factors": np.full((NUM_ITEMS, DIM), version, np.float32),
                    "item_bias": np.zeros(NUM_ITEMS, np.float32),
                }
            )
            digest = ctx.blobs.put(forged)
            parent_chain = chain_hash(parent_chain, digest, row.contributors)
            _edit(ctx, fid, version, sha256=digest, chain_hash=parent_chain, size=len(forged))
        report = verify_lineage(ctx, fid)
        assert report.bad_version == 2
        assert "differs from its signed manifest" in (report.reason or "")
        assert "sha256" in (report.reason or "")

    def test_resigned_with_another_key(
        self, app: FastAPI, history: tuple[str, dict[str, str]]
    ) -> None:
        fid, _ = history
        ctx = _ctx(app)
        row = _row(ctx, fid, 2)
        impostor = LineageSigner.from_pem(generate_signing_key_pem())
        assert row.manifest is not None
        _edit(ctx, fid, 2, signature=impostor.sign(row.manifest.encode()))
        report = verify_lineage(ctx, fid)
        assert report.bad_version == 2
        assert "does not verify" in (report.reason or "")

    def test_manifest_rewritten(self, app: FastAPI, history: tuple[str, dict[str, str]]) -> None:
        fid, _ = history
        ctx = _ctx(app)
        row = _row(ctx, fid, 1)
        assert row.manifest is not None
        fields = json.loads(row.manifest)
        fields["round"] = 7
        _edit(ctx, fid, 1, manifest=json.dumps(fields), round_number=7)
        report = verify_lineage(ctx, fid)
        assert report.bad_version == 1
        assert "does not verify" in (report.reason or "")

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            (lambda row: {"created_at": row.created_at - timedelta(days=3)}, "created_at"),
            (lambda row: {"round_number": row.round_number + 1}, "round"),
            (lambda row: {"contributors": row.contributors[1:]}, "contributors"),
            (lambda row: {"step_scale": row.step_scale / 2}, "step_scale"),
        ],
    )
    def test_row_fields_edited(
        self,
        app: FastAPI,
        history: tuple[str, dict[str, str]],
        change: Callable[[ModelVersion], dict[str, Any]],
        field: str,
    ) -> None:
        fid, _ = history
        ctx = _ctx(app)
        _edit(ctx, fid, 2, **change(_row(ctx, fid, 2)))
        report = verify_lineage(ctx, fid)
        assert report.bad_version == 2
        assert field in (report.reason or "")

    def test_unsigned_version(self, app: FastAPI, history: tuple[str, dict[str, str]]) -> None:
        fid, _ = history
        _edit(_ctx(app), fid, 3, signature=None)
        report = verify_lineage(_ctx(app), fid)
        assert (report.bad_version, report.reason) == (3, "the version is not signed")

    def test_update_blob_edited(self, app: FastAPI, history: tuple[str, dict[str, str]]) -> None:
        fid, _ = history
        ctx = _ctx(app)
        (contributor,) = _row(ctx, fid, 2).contributors
        tamper_blob(ctx, contributor)  # a file, or a small update's database rows
        report = verify_lineage(ctx, fid)
        assert report.bad_version == 2
        assert f"update blob {contributor} was changed" in (report.reason or "")

    def test_newest_version_deleted(
        self, app: FastAPI, history: tuple[str, dict[str, str]]
    ) -> None:
        fid, _ = history
        ctx = _ctx(app)
        with ctx.sessions.begin() as session:
            session.execute(
                delete(ModelVersion).where(
                    ModelVersion.federation_id == fid, ModelVersion.version == ROUNDS
                )
            )
        report = verify_lineage(ctx, fid)
        assert not report.ok
        assert "versions were deleted" in (report.reason or "")

    def test_newest_version_deleted_and_head_moved_back(
        self, app: FastAPI, history: tuple[str, dict[str, str]]
    ) -> None:
        fid, _ = history
        ctx = _ctx(app)
        with ctx.sessions.begin() as session:
            session.execute(
                delete(ModelVersion).where(
                    ModelVersion.federation_id == fid, ModelVersion.version == ROUNDS
                )
            )
            session.execute(
                update(Federation).where(Federation.id == fid).values(latest_version=ROUNDS - 1)
            )
        report = verify_lineage(ctx, fid)
        assert not report.ok
        assert f"closed rounds produced versions [{ROUNDS}]" in (report.reason or "")

    def test_middle_version_deleted(
        self, app: FastAPI, history: tuple[str, dict[str, str]]
    ) -> None:
        fid, _ = history
        ctx = _ctx(app)
        with ctx.sessions.begin() as session:
            session.execute(
                delete(ModelVersion).where(
                    ModelVersion.federation_id == fid, ModelVersion.version == 1
                )
            )
        report = verify_lineage(ctx, fid)
        assert (report.bad_version, report.reason) == (2, "version 1 is missing")


class TestSigningKey:
    def test_generated_owner_only_and_separate_from_the_token_key(
        self, settings: Settings, ctx: Context
    ) -> None:
        path = settings.data_dir / "signing_key.pem"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert b"PRIVATE KEY" in path.read_bytes()
        assert ctx.secret_key not in path.read_bytes()
        assert ctx.signer.public_key_raw != ctx.secret_key

    def test_every_process_on_the_data_dir_shares_it(self, settings: Settings) -> None:
        first, second = build_context(settings), build_context(settings)
        try:
            assert first.signer.public_key_b64 == second.signer.public_key_b64
            signature = first.signer.sign(b"manifest")
            assert second.signer.verify(b"manifest", signature)
        finally:
            for context in (first, second):
                context.sessions.kw["bind"].dispose()

    def test_configured_key_is_used(self, settings: Settings) -> None:
        pem = generate_signing_key_pem()
        configured = settings.model_copy(update={"signing_key": SecretStr(pem.decode())})
        context = build_context(configured)
        try:
            assert context.signer.public_key_b64 == LineageSigner.from_pem(pem).public_key_b64
            assert not (settings.data_dir / "signing_key.pem").exists()
        finally:
            context.sessions.kw["bind"].dispose()

    def test_a_key_that_is_not_ed25519_is_refused(self, settings: Settings) -> None:
        bad = settings.model_copy(update={"signing_key": SecretStr("not a pem")})
        with pytest.raises(SystemExit, match="signing key cannot be loaded"):
            build_context(bad)
