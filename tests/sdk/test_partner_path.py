"""The partner path of issue 13, each trap against the in-process coordinator: loading
errors at load time, the cleaning report kept, ids without a catalog, test figures
that a re-run cannot overwrite, progress lines, and recommend()'s fallback and
deployment refresh."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import participant_sdk.participant as participant_module
from fedrec.partition import local_view, partition_users
from fedrec.synthetic import make_synthetic
from participant_sdk import APIConnectionError, Client, FederatedRecommender, Round
from participant_sdk.recsys import BPRConfig, DataFileError
from participant_sdk.recsys.data import Interactions
from tests.conftest import ADMIN_TOKEN

CONFIG = BPRConfig(dim=8, learning_rate=0.05, epochs=2, seed=0)


def _sdk(coordinator: TestClient, token: str) -> Client:
    return Client(str(coordinator.base_url), token, http_client=coordinator)


@pytest.fixture
def coordinator(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def data() -> Interactions:
    return make_synthetic(num_users=40, num_items=120, seed=3)


def _federation(
    coordinator: TestClient,
    num_items: int,
    *,
    catalog: list[str] | None,
    participants: int = 1,
    **extra: object,
) -> tuple[Client, str, list[str]]:
    admin = _sdk(coordinator, ADMIN_TOKEN)
    federation = admin.federations.create(
        "partner",
        {"kind": "mf", "num_items": num_items, "dim": 8, "seed": 0},
        catalog=catalog,
        **extra,  # type: ignore[arg-type]
    )
    tokens = [admin.participants.enrol(federation.id, f"p{i}").token for i in range(participants)]
    return admin, federation.id, tokens


def _write_csv(path: Path, data: Interactions, header: str = "user,item,ts") -> Path:
    lines = [header]
    for u, i, t in zip(data.users, data.items, data.timestamps, strict=True):
        lines.append(f"{data.user_ids[u]},{data.item_ids[i]},{t:.0f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run_to_completion(admin: Client, fid: str, part: FederatedRecommender) -> None:
    """Drive one participant by steps (no waiting) until the federation completes."""
    for _ in range(20):
        outcome = part.step()
        if outcome == "completed":
            return
        if outcome == "uploaded":
            admin.rounds.wait_for_next(fid, after=part.progress.last_round, timeout=30)
    raise AssertionError("the federation did not complete in 20 steps")


# ---------------------------------------------------------------------- loading
def test_a_header_only_file_fails_at_load_not_in_the_loop(
    coordinator: TestClient, data: Interactions, tmp_path: Path
) -> None:
    _admin, fid, tokens = _federation(coordinator, data.num_items, catalog=data.item_ids)
    path = tmp_path / "export.csv"
    path.write_text("customer,sku,ts\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="no interaction rows"):
        FederatedRecommender.from_file(_sdk(coordinator, tokens[0]), fid, path, config=CONFIG)


def test_from_file_keeps_and_logs_the_cleaning_report(
    coordinator: TestClient, data: Interactions, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _admin, fid, tokens = _federation(coordinator, data.num_items, catalog=data.item_ids)
    path = _write_csv(tmp_path / "orders.csv", data, header="customer,sku,ts")
    with path.open("a", encoding="utf-8") as handle:
        handle.write(",x,1\n")  # no customer: malformed
        u, i = data.user_ids[data.users[0]], data.item_ids[data.items[0]]
        handle.write(f"{u},{i},1\n")  # an older duplicate of the first row
    with caplog.at_level(logging.INFO, logger="fedrec.participant"):
        part = FederatedRecommender.from_file(
            _sdk(coordinator, tokens[0]), fid, path, config=CONFIG
        )
    report = part.cleaning_report
    assert report is not None
    assert report.rows_read == len(data) + 2
    assert report.dropped == {"missing_user": 1}
    assert report.duplicates_collapsed == 1
    assert len(part.data) == len(data)  # customer/sku/ts auto-detected, every row kept
    logged = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert logged
    assert logged[0].levelno == logging.WARNING
    assert "1 duplicate" in logged[0].getMessage()


def test_from_file_takes_an_encoding(
    coordinator: TestClient, data: Interactions, tmp_path: Path
) -> None:
    catalog = [*data.item_ids[:-1], "café"]
    _admin, fid, tokens = _federation(coordinator, data.num_items, catalog=catalog)
    path = tmp_path / "latin.csv"
    rows = [f"u{k % 7},{catalog[k]}" for k in range(len(catalog))]
    path.write_bytes(("user,item\n" + "\n".join(rows) + "\n").encode("latin-1"))
    sdk = _sdk(coordinator, tokens[0])
    with pytest.raises(DataFileError, match=r"line \d+ is not valid utf-8-sig.*encoding="):
        FederatedRecommender.from_file(sdk, fid, path, config=CONFIG)
    part = FederatedRecommender.from_file(sdk, fid, path, config=CONFIG, encoding="latin-1")
    assert len(part.data) == len(catalog)


# ---------------------------------------------------------------------- no catalog
def test_without_a_catalog_u_data_keeps_item_1682(
    coordinator: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MovieLens ids run 1..1682: without a catalog they are rows 0..1681."""
    _admin, fid, tokens = _federation(coordinator, 1682, catalog=None)
    rows = [f"{1 + k % 9}\t{1 + k}\t4\t{800000000 + k}" for k in range(1682)]
    path = tmp_path / "u.data"
    path.write_text("\n".join(rows) + "\n", encoding="latin-1")
    with caplog.at_level(logging.WARNING, logger="fedrec.participant"):
        part = FederatedRecommender.from_file(
            _sdk(coordinator, tokens[0]), fid, path, config=CONFIG
        )
    assert not [r for r in caplog.records if "left out" in r.getMessage()]
    assert len(part.data) == 1682
    assert part.data.item_ids[1681] == "1682"
    assert sorted(part.data.items.tolist()) == list(range(1682))


def test_without_a_catalog_out_of_range_ids_get_a_correct_hint(
    coordinator: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _admin, fid, tokens = _federation(coordinator, 50, catalog=None)
    path = tmp_path / "one-based.csv"
    path.write_text(
        "user,item\n" + "\n".join(f"u{k % 5},{1 + k}" for k in range(50)) + "\n",
        encoding="utf-8",
    )
    sdk = _sdk(coordinator, tokens[0])
    with caplog.at_level(logging.WARNING, logger="fedrec.participant"):
        part = FederatedRecommender.from_file(sdk, fid, path, config=CONFIG)
    message = next(r.getMessage() for r in caplog.records if "left out" in r.getMessage())
    assert "outside the federation's catalog" not in message
    assert "no catalog" in message
    assert "item_id_base=1" in message
    assert "0..49" in message
    assert len(part.data) == 49
    fixed = FederatedRecommender.from_file(sdk, fid, path, config=CONFIG, item_id_base=1)
    assert len(fixed.data) == 50


def test_no_item_in_the_catalog_is_an_error_not_an_idle_participant(
    coordinator: TestClient, data: Interactions, tmp_path: Path
) -> None:
    _admin, fid, tokens = _federation(coordinator, data.num_items, catalog=data.item_ids)
    path = tmp_path / "other-shop.csv"
    path.write_text("user,item\nu1,zz-1\nu2,zz-2\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="no interaction left to train on"):
        FederatedRecommender.from_file(_sdk(coordinator, tokens[0]), fid, path, config=CONFIG)


# ---------------------------------------------------------------------- test figures
def test_a_rerun_against_a_completed_federation_keeps_the_first_test_figures(
    coordinator: TestClient, data: Interactions, caplog: pytest.LogCaptureFixture
) -> None:
    admin, fid, tokens = _federation(
        coordinator, data.num_items, catalog=data.item_ids, rounds={"max_rounds": 1}
    )
    first = FederatedRecommender(_sdk(coordinator, tokens[0]), fid, data, config=CONFIG)
    _run_to_completion(admin, fid, first)
    reported = first.finish()
    before = [r for r in admin.metrics(fid) if r.split == "test"]
    assert [r.metrics["ndcg@10"] for r in before] == [pytest.approx(reported["ndcg@10"])]

    # the same participant again, fresh process, other data (half of its users)
    half = local_view(data, partition_users(data, "iid", 2, seed=0)[0])
    rerun = FederatedRecommender(_sdk(coordinator, tokens[0]), fid, half, config=CONFIG)
    with caplog.at_level(logging.WARNING, logger="fedrec.participant"):
        assert rerun.step() == "completed"
        rerun.finish()
    after = [r for r in admin.metrics(fid) if r.split == "test"]
    assert [(r.metrics, r.num_users) for r in after] == [(r.metrics, r.num_users) for r in before]
    assert any("already reported" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------- progress
def test_run_logs_each_round_with_an_eta_and_reconnects(
    coordinator: TestClient,
    data: Interactions,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _admin, fid, tokens = _federation(
        coordinator, data.num_items, catalog=data.item_ids, rounds={"max_rounds": 3}
    )
    part = FederatedRecommender(_sdk(coordinator, tokens[0]), fid, data, config=CONFIG)
    real_step = part._step  # run() steps on the round its long-poll answered
    calls = {"n": 0}

    def flaky_step(current: Round, weights: Any = None) -> participant_module.StepOutcome:
        calls["n"] += 1
        if calls["n"] == 2:  # the coordinator is gone for one step after round 1
            raise APIConnectionError(httpx.Request("GET", "http://127.0.0.1/"))
        return real_step(current, weights)

    monkeypatch.setattr(part, "_step", flaky_step)
    monkeypatch.setattr("participant_sdk.participant.time.sleep", lambda _seconds: None)
    with caplog.at_level(logging.INFO, logger="fedrec.participant"):
        metrics = part.run(round_timeout=30, outage_timeout=60)
    assert "ndcg@10" in metrics
    lines = [r.getMessage() for r in caplog.records]
    rounds = [line for line in lines if " uploaded (" in line]
    assert [line.split(" round ")[1].split(" ")[0] for line in rounds] == ["1/3", "2/3", "3/3"]
    assert "ETA" in rounds[-1]
    assert any(line.startswith("reconnected to the coordinator") for line in lines)


def test_run_draws_an_optional_progress_bar(
    coordinator: TestClient, data: Interactions, capsys: pytest.CaptureFixture[str]
) -> None:
    _admin, fid, tokens = _federation(
        coordinator, data.num_items, catalog=data.item_ids, rounds={"max_rounds": 2}
    )
    part = FederatedRecommender(_sdk(coordinator, tokens[0]), fid, data, config=CONFIG)
    part.run(round_timeout=30, progress_bar=True)
    assert f"federation {fid}" in capsys.readouterr().out


# ---------------------------------------------------------------------- serving
def test_recommend_for_an_unknown_user_falls_back_to_popularity(
    coordinator: TestClient, data: Interactions
) -> None:
    admin, fid, tokens = _federation(
        coordinator, data.num_items, catalog=data.item_ids, rounds={"max_rounds": 1}
    )
    part = FederatedRecommender(_sdk(coordinator, tokens[0]), fid, data, config=CONFIG)
    _run_to_completion(admin, fid, part)
    known = part.recommend(data.user_ids[0], k=5)
    assert known.fallback is None
    unknown = part.recommend("never-seen", k=5)
    assert unknown.fallback == "popularity"
    counts = np.bincount(data.items, minlength=data.num_items)
    assert [counts[data.item_ids.index(i)] for i in unknown] == sorted(counts, reverse=True)[:5]
    assert unknown.version == known.version == admin.deployment.get(fid).version


def test_recommend_follows_a_promote_and_a_rollback(
    coordinator: TestClient, data: Interactions
) -> None:
    admin, fid, tokens = _federation(
        coordinator,
        data.num_items,
        catalog=data.item_ids,
        rounds={"max_rounds": 2},
        deploy={"policy": "latest"},
    )
    part = FederatedRecommender(
        _sdk(coordinator, tokens[0]), fid, data, config=CONFIG, deployment_ttl=0
    )
    _run_to_completion(admin, fid, part)
    user = data.user_ids[0]
    assert part.recommend(user).version == 2
    admin.deployment.promote(fid, 1)
    assert part.recommend(user).version == 1
    assert part.deployed_version == 1
    admin.deployment.promote(fid, 2)
    assert part.recommend(user).version == 2
