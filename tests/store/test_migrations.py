"""Alembic migrations: no drift, one head, down and up again with data, on every backend."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from coordinator.migrate import alembic_config, downgrade, upgrade
from coordinator.store.models import Base


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return str(request.getfixturevalue("fresh_postgres_database"))


def test_upgrade_matches_models(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    engine.dispose()
    assert diff == []


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_downgrade_to_base_and_up_again_with_data(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO federations (id, name, state, model_spec, strategy, round_policy, "
                "deploy_policy, privacy, latest_version, completed_rounds, created_at) VALUES "
                "('f1', 'n', 'active', '{}', '{}', '{}', '{}', '{}', 0, 0, CURRENT_TIMESTAMP)"
            )
        )
    downgrade(empty_database_url, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(empty_database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"federations", "participants", "rounds", "updates", "model_versions"} <= tables


def test_upgrade_is_idempotent(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert version == head


def test_0007_purges_stored_tokens_and_widens_num_examples(empty_database_url: str) -> None:
    """Idempotency records written before 0007 held enrolment responses, tokens in clear."""
    upgrade(empty_database_url, "0006")
    engine = create_engine(empty_database_url)
    insert = text(
        "INSERT INTO idempotency_records (id, principal, key, method, path, request_sha256, "
        "status_code, content_type, response_body, created_at) VALUES "
        "(:id, 'admin', :id, 'POST', :path, 'x', 201, 'application/json', :body, "
        "CURRENT_TIMESTAMP)"
    )
    with engine.begin() as conn:
        conn.execute(
            insert,
            {
                "id": "enrol",
                "path": "/v1/federations/f/participants",
                "body": '{"id":"p","token":"frp_secret"}',
            },
        )
        conn.execute(
            insert,
            {
                "id": "reenrol",
                "path": "/v1/federations/f/participants/p/reenrol",
                "body": '{"id":"p","token":"frp_secret2"}',
            },
        )
        conn.execute(
            insert, {"id": "create", "path": "/v1/federations", "body": '{"id":"f","name":"n"}'}
        )
    upgrade(empty_database_url, "0007")
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT id, response_body FROM idempotency_records")).all()
    columns = {c["name"]: c for c in inspect(engine).get_columns("updates")}
    engine.dispose()
    assert [row[0] for row in kept] == ["create"]
    assert all("frp_" not in (row[1] or "") for row in kept)
    assert "BIGINT" in str(columns["num_examples"]["type"]).upper()


def test_0013_moves_share_ciphertexts_out_of_the_state_row_and_back(
    empty_database_url: str,
) -> None:
    """A round in flight during the upgrade keeps its share messages, now one row each."""
    upgrade(empty_database_url, "0012")
    engine = create_engine(empty_database_url)
    ciphertexts = {"alice": {"bob": b"a->b"}, "bob": {"alice": b"b->a"}}
    state = {
        "federation_id": "f1",
        "round": 1,
        "shares": [
            {
                "federation_id": "f1",
                "round": 1,
                "participant": sender,
                "ciphertexts": {r: base64.b64encode(c).decode() for r, c in sent.items()},
            }
            for sender, sent in sorted(ciphertexts.items())
        ],
    }
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO federations (id, name, state, model_spec, strategy, round_policy, "
                "deploy_policy, privacy, latest_version, completed_rounds, created_at) VALUES "
                "('f1', 'n', 'active', '{}', '{}', '{}', '{}', '{}', 0, 0, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO rounds (id, federation_id, number, state, base_version, "
                "update_count, opened_at) VALUES ('r1', 'f1', 1, 'open', 0, 0, "
                "CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO secagg_states (round_id, federation_id, round_number, phase, "
                "state, updated_at) VALUES ('r1', 'f1', 1, 'masked', :state, CURRENT_TIMESTAMP)"
            ),
            {"state": json.dumps(state)},
        )
    upgrade(empty_database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT sender_id, recipient_id, ciphertext FROM secagg_share_ciphertexts")
        ).all()
        moved = json.loads(conn.execute(text("SELECT state FROM secagg_states")).scalar_one())
    assert {(s, r): bytes(c) for s, r, c in rows} == {
        ("alice", "bob"): b"a->b",
        ("bob", "alice"): b"b->a",
    }
    assert moved["shares"] == []
    assert moved["sharers"] == ["alice", "bob"]
    downgrade(empty_database_url, "0012")
    with engine.connect() as conn:
        back = json.loads(conn.execute(text("SELECT state FROM secagg_states")).scalar_one())
    engine.dispose()
    assert back["shares"] == state["shares"]
    assert "sharers" not in back
