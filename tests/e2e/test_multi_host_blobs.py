"""Done-when of multi-host blob storage: two coordinators, two data folders, one PostgreSQL.

Each coordinator is a real ``fedrec serve`` process (fedrec.local_server) with its own data
folder and ``FEDREC_BLOB_STORE=postgres``: they share no filesystem, only the database,
as replicas on two hosts would. The same runs with ``FEDREC_BLOB_STORE=s3`` against moto's
S3 server on 127.0.0.1 (no real S3 here), configured as an operator would, by environment.
A participant uploads to one and the other aggregates; then the other way round. Both serve
the same bytes, neither writes a blob file, and ``verify-lineage`` and ``gc`` pass from
either host.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from coordinator.domain.signing import generate_signing_key_pem
from participant_sdk import Client
from tests.e2e.server import ADMIN_TOKEN, ServerProcess
from tests.faults.conftest import deltas, new_postgres_database
from tests.s3_server import S3_ENV, moto_s3_server

NUM_ITEMS, DIM = 40, 4


def _blob_files(server: ServerProcess) -> list[Path]:
    return [path for path in server.data_dir.rglob("*") if path.is_file() and "blobs" in path.parts]


@contextlib.contextmanager
def _blob_settings(blob_store: str) -> Iterator[dict[str, str]]:
    """The ``FEDREC_*`` (and AWS) variables both hosts get for ``blob_store``."""
    if blob_store == "postgres":
        yield {"FEDREC_BLOB_STORE": "postgres"}
        return
    with moto_s3_server() as endpoint:
        from coordinator.store.s3_blobs import s3_client

        bucket = f"fedrec-{uuid.uuid4().hex[:12]}"
        with pytest.MonkeyPatch.context() as patch:
            for name, value in S3_ENV.items():
                patch.setenv(name, value)
            s3_client(endpoint_url=endpoint, region="us-east-1").create_bucket(Bucket=bucket)
        yield {
            "FEDREC_BLOB_STORE": "s3",
            "FEDREC_S3_BUCKET": bucket,
            "FEDREC_S3_ENDPOINT_URL": endpoint,
            "FEDREC_S3_REGION": "us-east-1",
            **S3_ENV,
        }


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("blob_store", ["postgres", "s3"])
def test_two_hosts_share_one_federation(tmp_path: Path, blob_store: str) -> None:
    with new_postgres_database() as database_url, _blob_settings(blob_store) as env:
        # replicas share the keys that sign versions and chain the audit log
        keys = {
            "FEDREC_SIGNING_KEY": generate_signing_key_pem().decode(),
            "FEDREC_AUDIT_KEY": secrets.token_urlsafe(32),
        }
        hosts = [
            ServerProcess(tmp_path / name, database_url, **env, **keys)
            for name in ("host-a", "host-b")
        ]
        for server in hosts:  # one after the other: the first migrates the database
            server.start()
        try:
            federation_id = _federate(*hosts)
        finally:
            for server in hosts:
                server.stop()

        for server in hosts:  # each host checks the chain from the database alone
            lineage = server.cli("verify-lineage", federation_id)
            assert lineage.returncode == 0, lineage.stderr
            assert "lineage ok: 3 versions verified" in lineage.stdout
            assert _blob_files(server) == []
        gc = hosts[1].cli("gc", "--dry-run", "--grace-hours", "0")
        assert gc.returncode == 0, gc.stderr
        # versions 0-2 and the two updates: nothing unreferenced
        assert "would remove 0 (0.0 MB); kept 5 referenced" in gc.stdout

    logs = [server.log_path.read_text(errors="replace") for server in hosts]
    banner = {"postgres": "database tables blobs/blob_chunks in postgresql", "s3": "s3://fedrec-"}
    for log in logs:  # each banner says where the blobs are
        assert f"blobs:          {banner[blob_store]}" in log
    assert f"federation {federation_id} round 1 aggregated 1 updates" in logs[1]  # host b
    assert f"federation {federation_id} round 2 aggregated 1 updates" in logs[0]  # host a


def _federate(host_a: ServerProcess, host_b: ServerProcess) -> str:
    admin_a, admin_b = Client(host_a.url, ADMIN_TOKEN), Client(host_b.url, ADMIN_TOKEN)
    try:
        created = admin_a.federations.create(
            "two hosts",
            {"kind": "mf", "num_items": NUM_ITEMS, "dim": DIM, "seed": 3},
            rounds={
                "min_participants": 1,
                "max_rounds": 2,
                "deadline_seconds": 3600,  # the admin closes each round on the other host
                "below_quorum": "extend",
                "final_evaluation_seconds": 0,
            },
        )
        fid = created.id
        tokens = [admin_a.participants.enrol(fid, f"shop-{i}").token for i in range(2)]
        with Client(host_a.url, tokens[0]) as on_a, Client(host_b.url, tokens[1]) as on_b:
            # version 0 was written by host a; host b serves it
            initial = on_b.models.weights(fid, 0)
            assert initial["item_factors"].shape == (NUM_ITEMS, DIM)

            # round 1: uploaded to host a, aggregated by host b
            on_a.updates.submit(fid, 1, deltas(1, NUM_ITEMS, DIM), base_version=0, num_examples=10)
            version_1 = admin_b.rounds.aggregate(fid, 1)
            assert version_1.version == 1

            # round 2: uploaded to host b, aggregated by host a
            assert on_b.rounds.current(fid).number == 2
            on_b.updates.submit(fid, 2, deltas(2, NUM_ITEMS, DIM), base_version=1, num_examples=10)
            version_2 = admin_a.rounds.aggregate(fid, 2)
            assert version_2.version == 2

            from_a, from_b = on_a.models.weights(fid, 2), on_b.models.weights(fid, 2)
            for name in from_a:
                np.testing.assert_array_equal(from_a[name], from_b[name])
            assert not np.array_equal(from_a["item_factors"], initial["item_factors"])
        versions = admin_b.models.list(fid)
        assert [v.version for v in versions] == [0, 1, 2]
        assert [v.sha256 for v in versions] == [v.sha256 for v in admin_a.models.list(fid)]
        return fid
    finally:
        admin_a.close()
        admin_b.close()
