"""Secure aggregation through the REST round lifecycle, phase by phase (every backend).

Participants are the SDK's ``SecAggClient`` state machines talking JSON to the real app;
phases past their deadline are closed by the timer's job (``run_due_work``), which the
test calls itself (the app runs no timer here).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain import aggregation_job
from coordinator.store.models import SecAggMaskedInput, SecAggShareCiphertext, SecAggState
from participant_sdk.secagg.client import SecAggClient
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.keys import RoundContext
from participant_sdk.secagg.messages import Roster, ShareInbox, UnmaskRequest
from participant_sdk.secagg.session import clip_to_norm
from tests.factories import (
    DIM,
    NUM_ITEMS,
    assert_problem,
    create_federation,
    enrol,
    put_update,
    update_bytes,
    wait_round_closed,
    weights,
)

CLIP = 1.0
LENGTH = NUM_ITEMS * DIM + NUM_ITEMS
SECURE_STRATEGY = {
    "name": "fedavg",
    "weighting": "uniform",
    "normalization": "total",
    "update_norm_clip": None,
}


def secure_federation(
    client: TestClient, admin: dict[str, str], *, threshold: int = 2, **secagg: Any
) -> str:
    policy = {"threshold": threshold, "clip_norm": CLIP, "phase_seconds": 0.3, **secagg}
    body = create_federation(
        client,
        admin,
        strategy=SECURE_STRATEGY,
        privacy={"secure_aggregation": policy},
        rounds={"min_participants": 1, "max_rounds": 3},
    )
    return str(body["id"])


class Party:
    """One participant: its token, its update and its state machine for one round."""

    def __init__(self, client: TestClient, fid: str, pid: str, headers: dict[str, str], seed: int):
        self.client, self.fid, self.pid, self.headers = client, fid, pid, headers
        rng = np.random.default_rng(seed)
        self.update = clip_to_norm(rng.standard_normal(LENGTH) * 0.2, CLIP)
        self.machine: SecAggClient | None = None

    def url(self, number: int, kind: str | None = None) -> str:
        base = f"/v1/federations/{self.fid}/rounds/{number}/secagg"
        return base if kind is None else f"{base}/{kind}"

    def status(self, number: int) -> dict[str, Any]:
        response = self.client.get(self.url(number), headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def send(self, number: int, kind: str, message: dict[str, Any]) -> Any:
        return self.client.post(self.url(number, kind), json=message, headers=self.headers)

    def start(self, number: int) -> None:
        status = self.status(number)
        codec = FixedPointCodec(
            clip=status["clip_norm"], max_participants=status["max_participants"]
        )
        self.machine = SecAggClient(
            context=RoundContext(self.fid, number),
            participant=self.pid,
            update=self.update,
            codec=codec,
        )

    def keys(self, number: int) -> dict[str, Any]:
        self.start(number)
        assert self.machine is not None
        response = self.send(number, "keys", self.machine.advertise().to_dict())
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def shares(self, number: int) -> dict[str, Any]:
        assert self.machine is not None
        roster = Roster.from_dict(self.status(number)["roster"])
        response = self.send(number, "shares", self.machine.share_keys(roster).to_dict())
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def masked(self, number: int) -> dict[str, Any]:
        assert self.machine is not None
        inbox = ShareInbox.from_dict(self.status(number)["inbox"])
        response = self.send(number, "masked-input", self.machine.masked_input(inbox).to_dict())
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def unmask(self, number: int) -> dict[str, Any]:
        assert self.machine is not None
        request = UnmaskRequest.from_dict(self.status(number)["unmask_request"])
        response = self.send(number, "unmask", self.machine.unmask(request).to_dict())
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def parties(client: TestClient, admin: dict[str, str], fid: str, n: int) -> list[Party]:
    out = []
    for i in range(n):
        pid, headers = enrol(client, admin, fid, f"shop-{i}")
        out.append(Party(client, fid, pid, headers, seed=i))
    return sorted(out, key=lambda p: p.pid)


def close_due_phases(app: FastAPI) -> None:
    """Let the phase deadline pass, then run one timer tick."""
    time.sleep(0.35)
    aggregation_job.run_due_work(app.state.context)


def expected_model(
    client: TestClient, fid: str, admin: dict[str, str], survivors: list[Party], version: int = 0
) -> dict[str, np.ndarray]:
    base = weights(client, fid, version, admin)
    total = np.sum([p.update for p in survivors], axis=0) / len(survivors)
    factors = total[: NUM_ITEMS * DIM].reshape(NUM_ITEMS, DIM)
    return {
        "item_factors": base["item_factors"].astype(np.float64) + factors,
        "item_bias": base["item_bias"].astype(np.float64) + total[NUM_ITEMS * DIM :],
    }


def assert_model(
    client: TestClient, fid: str, admin: dict[str, str], version: int, want: dict[str, np.ndarray]
) -> None:
    got = weights(client, fid, version, admin)
    # fixed point: each input within 1/(2 scale) per coordinate, so their mean is too
    bound = 1 / (2 * FixedPointCodec(clip=CLIP, max_participants=1000).scale) + 1e-6
    for name, values in want.items():
        np.testing.assert_allclose(got[name], values, rtol=0, atol=bound)


def assert_nowhere(ctx: Any, needles: list[bytes]) -> None:
    """No database value and no blob contains any of ``needles``."""
    engine = ctx.sessions.kw["bind"]
    with engine.connect() as connection:
        for table in inspect(engine).get_table_names():
            for row in connection.execute(text(f"SELECT * FROM {table}")):  # noqa: S608
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    assert not any(n in raw for n in needles), table
    blobs = [ctx.blobs.get(entry.digest) for entry in ctx.blobs.scan()]
    assert blobs  # the model versions at least
    assert not any(n in blob for blob in blobs for n in needles)


class TestSpecs:
    @pytest.mark.parametrize(
        ("strategy", "privacy", "needs"),
        [
            ({**SECURE_STRATEGY, "aggregator": "median"}, {}, "strategy.aggregator = 'mean'"),
            ({**SECURE_STRATEGY, "update_norm_clip": 5.0}, {}, "update_norm_clip = null"),
            (SECURE_STRATEGY, {"max_update_norm": 3.0}, "privacy.max_update_norm = null"),
            ({**SECURE_STRATEGY, "weighting": "examples"}, {}, "weighting = 'uniform'"),
            ({**SECURE_STRATEGY, "normalization": "touched"}, {}, "normalization = 'total'"),
        ],
    )
    def test_plaintext_defences_are_refused(
        self, client: TestClient, admin_headers: dict, strategy: dict, privacy: dict, needs: str
    ) -> None:
        body = {
            "name": "f",
            "model": {"kind": "mf", "num_items": 5, "dim": 2},
            "strategy": strategy,
            "privacy": {"secure_aggregation": {"threshold": 2, "clip_norm": 1.0}, **privacy},
        }
        response = client.post("/v1/federations", json=body, headers=admin_headers)
        problem = assert_problem(response, 422, "validation-error")
        assert needs in problem["detail"]
        assert problem["field"] == "privacy.secure_aggregation"

    def test_the_clip_norm_is_required_and_agrees_with_dp(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        body = {
            "name": "f",
            "model": {"kind": "mf", "num_items": 5, "dim": 2},
            "strategy": SECURE_STRATEGY,
            "privacy": {"secure_aggregation": {"threshold": 2}},
        }
        response = client.post("/v1/federations", json=body, headers=admin_headers)
        assert "clip_norm" in assert_problem(response, 422, "validation-error")["detail"]
        body["privacy"] = {
            "secure_aggregation": {"threshold": 2, "clip_norm": 2.0},
            "dp": {"clip_norm": 1.0, "noise_multiplier": 1.0},
        }
        response = client.post("/v1/federations", json=body, headers=admin_headers)
        assert "equal to privacy.dp.clip_norm" in response.json()["detail"]
        # DP's clip norm alone is the participants' bound
        body["privacy"] = {
            "secure_aggregation": {"threshold": 2},
            "dp": {"clip_norm": 1.0, "noise_multiplier": 1.0},
        }
        assert client.post("/v1/federations", json=body, headers=admin_headers).status_code == 201

    def test_ease_is_refused(self, client: TestClient, admin_headers: dict) -> None:
        body = {
            "name": "f",
            "model": {"kind": "ease", "num_items": 5},
            "strategy": SECURE_STRATEGY,
            "privacy": {"secure_aggregation": {"threshold": 2, "clip_norm": 1.0}},
        }
        response = client.post("/v1/federations", json=body, headers=admin_headers)
        assert "ease" in assert_problem(response, 422, "validation-error")["detail"]


class TestPhases:
    def test_a_full_round_publishes_the_exact_mean(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers)
        group = parties(client, admin_headers, fid, 3)
        first = group[0].status(1)
        assert first["phase"] == "advertise"
        assert first["vector_length"] == LENGTH
        assert first["in_cohort"] is True
        assert (first["graph"], first["degree"], first["neighbour_threshold"]) == (
            "complete",
            None,
            None,
        )
        # a plaintext upload is refused: the coordinator takes no clear update
        response = put_update(client, fid, 1, update_bytes(), group[0].headers)
        assert_problem(response, 409, "secure-aggregation-round")

        seen = [p.keys(1) for p in group]
        assert [s["phase"] for s in seen] == ["advertise", "advertise", "share"]
        assert seen[1]["answered"] is True
        roster = group[0].status(1)["roster"]
        assert [e["participant"] for e in roster["entries"]] == [p.pid for p in group]

        seen = [p.shares(1) for p in group]
        assert [s["phase"] for s in seen] == ["share", "share", "masked"]
        assert set(group[0].status(1)["inbox"]["ciphertexts"]) == {p.pid for p in group[1:]}

        seen = [p.masked(1) for p in group]
        assert seen[-1]["phase"] == "unmask"
        request = group[0].status(1)["unmask_request"]
        assert request["survivors"] == [p.pid for p in group]
        assert request["dropped"] == []

        seen = [p.unmask(1) for p in group]
        assert seen[-1]["phase"] == "done"
        assert seen[-1]["survivors"] == [p.pid for p in group]
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        assert_model(
            client, fid, admin_headers, 1, expected_model(client, fid, admin_headers, group)
        )
        # round 2 starts afresh on version 1
        assert group[0].status(2)["phase"] == "advertise"

    def test_a_sampled_round_runs_the_protocol_among_its_cohort_only(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        body = create_federation(
            client,
            admin_headers,
            strategy=SECURE_STRATEGY,
            privacy={
                "secure_aggregation": {"threshold": 2, "clip_norm": CLIP, "phase_seconds": 0.3}
            },
            rounds={
                "min_participants": 4,
                "max_rounds": 3,
                "sampling": {"kind": "fixed", "size": 2},
            },
        )
        fid = str(body["id"])
        group = parties(client, admin_headers, fid, 4)
        aggregation_job.run_due_work(app.state.context)  # the timer draws the cohort
        drawn = [p for p in group if p.status(1)["in_cohort"]]
        left_out = [p for p in group if not p.status(1)["in_cohort"]]
        assert len(drawn) == 2
        assert len(left_out) == 2
        outsider = left_out[0]
        outsider.start(1)
        assert outsider.machine is not None
        response = outsider.send(1, "keys", outsider.machine.advertise().to_dict())
        assert_problem(response, 409, "not-in-cohort")

        assert [p.keys(1)["phase"] for p in drawn] == ["advertise", "share"]
        roster = drawn[0].status(1)["roster"]
        assert [e["participant"] for e in roster["entries"]] == [p.pid for p in drawn]
        assert [p.shares(1)["phase"] for p in drawn] == ["share", "masked"]
        assert [p.masked(1)["phase"] for p in drawn] == ["masked", "unmask"]
        assert [p.unmask(1)["phase"] for p in drawn] == ["unmask", "done"]
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        assert_model(
            client, fid, admin_headers, 1, expected_model(client, fid, admin_headers, drawn)
        )

    def test_dropouts_after_sharing_and_after_upload_are_recovered(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers)
        group = parties(client, admin_headers, fid, 4)
        for p in group:
            p.keys(1)
        for p in group:
            p.shares(1)
        quitter, silent = group[1], group[2]  # shares then vanishes; uploads then vanishes
        for p in group:
            if p is not quitter:
                p.masked(1)
        assert group[0].status(1)["phase"] == "masked"
        close_due_phases(app)
        request = group[0].status(1)["unmask_request"]
        assert request["dropped"] == [quitter.pid]
        assert silent.pid in request["survivors"]
        for p in group:
            if p not in (quitter, silent):
                p.unmask(1)
        assert group[0].status(1)["phase"] == "unmask"
        close_due_phases(app)
        done = group[0].status(1)
        assert done["phase"] == "done"
        survivors = [p for p in group if p is not quitter]
        assert done["survivors"] == [p.pid for p in survivors]
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        want = expected_model(client, fid, admin_headers, survivors)
        assert_model(client, fid, admin_headers, 1, want)

    def test_below_the_threshold_the_round_aborts_with_nothing_kept(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers, threshold=3)
        group = parties(client, admin_headers, fid, 3)
        for p in group:
            p.keys(1)
        for p in group:
            p.shares(1)
        for p in group[:2]:
            p.masked(1)
        close_due_phases(app)
        status = group[0].status(1)
        assert status["phase"] == "aborted"
        assert "fewer than the threshold 3" in status["abort_reason"]
        failed = wait_round_closed(client, fid, 1, admin_headers)
        assert failed["state"] == "failed"
        assert failed["result_version"] is None
        federation = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert federation["latest_version"] == 0
        assert federation["current_round"] == 2
        with app.state.context.read_sessions() as session:
            stored = json.loads(session.scalars(select(SecAggState.state)).one())
            masked_rows = session.scalars(select(SecAggMaskedInput)).all()
            ciphertext_rows = session.scalars(select(SecAggShareCiphertext)).all()
        assert stored["masked"] == {}
        assert masked_rows == []
        assert ciphertext_rows == []
        assert stored["shares"] == []
        assert stored["sharers"] == []
        assert stored["result"] is None

    def test_no_stored_row_or_blob_holds_an_encoded_input(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers)
        group = parties(client, admin_headers, fid, 3)
        for step in ("keys", "shares", "masked"):
            for p in group:
                getattr(p, step)(1)
        encoded = [p.machine.encoded_input.astype("<u4").tobytes() for p in group if p.machine]
        needles = encoded + [base64.b64encode(e) for e in encoded]
        ctx = app.state.context
        assert_nowhere(ctx, needles)  # the masked inputs are stored, mid-protocol
        for p in group:
            p.unmask(1)
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        assert_nowhere(ctx, needles)  # and once the round is over

    def test_share_ciphertexts_live_in_rows_of_their_own_until_the_round_ends(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers)
        group = parties(client, admin_headers, fid, 3)
        for p in group:
            p.keys(1)
        sent = {}
        for p in group:
            assert p.machine is not None
            roster = Roster.from_dict(p.status(1)["roster"])
            message = p.machine.share_keys(roster)
            sent[p.pid] = dict(message.ciphertexts)
            assert p.send(1, "shares", message.to_dict()).status_code == 200
        with app.state.context.read_sessions() as session:
            stored = json.loads(session.scalars(select(SecAggState.state)).one())
            rows = session.scalars(select(SecAggShareCiphertext)).all()
        assert stored["shares"] == []  # the state row names who shared, nothing more
        assert stored["sharers"] == sorted(sent)
        assert {(r.sender_id, r.recipient_id): r.ciphertext for r in rows} == {
            (sender, recipient): data
            for sender, ciphertexts in sent.items()
            for recipient, data in ciphertexts.items()
        }
        # each inbox is served from the rows addressed to its recipient
        for p in group:
            inbox = p.status(1)["inbox"]
            want = {s: c[p.pid] for s, c in sent.items() if s != p.pid}
            assert ShareInbox.from_dict(inbox).ciphertexts == want
        for p in group:
            p.masked(1)
        for p in group:
            p.unmask(1)
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        with app.state.context.read_sessions() as session:
            assert session.scalars(select(SecAggShareCiphertext)).all() == []

    def test_messages_are_bound_to_their_round_and_sender(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers)
        group = parties(client, admin_headers, fid, 3)
        group[0].start(1)
        assert group[0].machine is not None
        keys = group[0].machine.advertise().to_dict()
        # someone else's message
        assert_problem(group[1].send(1, "keys", keys), 422, "invalid-secagg-message")
        # another round's message
        assert_problem(
            group[0].send(1, "keys", {**keys, "round": 2}), 422, "invalid-secagg-message"
        )
        # another federation's
        other = {**keys, "federation_id": "f" * 16}
        assert_problem(group[0].send(1, "keys", other), 422, "invalid-secagg-message")
        # the wrong phase
        fake_inbox = {"federation_id": fid, "round": 1, "participant": group[0].pid, "words": ""}
        problem = assert_problem(
            group[0].send(1, "masked-input", fake_inbox), 409, "secagg-wrong-phase"
        )
        assert problem["phase"] == "advertise"
        # the admin cannot cut the protocol short
        response = client.post(f"/v1/federations/{fid}/rounds/1/aggregate", headers=admin_headers)
        assert_problem(response, 409, "round-not-open")
        # nothing of that changed the round: the same keys are still welcome
        assert group[0].send(1, "keys", keys).status_code == 200
        # a second, different advertisement is refused
        group[0].start(1)
        assert group[0].machine is not None
        again = group[0].send(1, "keys", group[0].machine.advertise().to_dict())
        assert_problem(again, 409, "secagg-wrong-phase")

    def test_a_plaintext_federation_has_no_secagg_phases(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = create_federation(client, admin_headers)["id"]
        response = client.get(f"/v1/federations/{fid}/rounds/1/secagg", headers=admin_headers)
        assert_problem(response, 409, "not-secure-aggregation")

    def test_a_restarted_coordinator_resumes_mid_protocol(
        self, client: TestClient, settings: Settings, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers)
        group = parties(client, admin_headers, fid, 3)
        for p in group:
            p.keys(1)
        for p in group:
            p.shares(1)
        group[0].masked(1)
        # a new process on the same database: nothing but the stored state carries over
        with TestClient(create_app(settings, run_timer=False)) as restarted:
            for p in group:
                p.client = restarted
            assert group[1].status(1)["phase"] == "masked"
            for p in group[1:]:
                p.masked(1)
            for p in group:
                p.unmask(1)
            assert wait_round_closed(restarted, fid, 1, admin_headers)["state"] == "closed"
            want = expected_model(restarted, fid, admin_headers, group)
            assert_model(restarted, fid, admin_headers, 1, want)


class TestComposition:
    def test_two_replicas_on_one_database_take_concurrent_messages(
        self, client: TestClient, settings: Settings, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers)
        group = parties(client, admin_headers, fid, 6)
        with TestClient(create_app(settings, run_timer=False)) as replica:
            for k, p in enumerate(group):
                p.client = replica if k % 2 else client
            for step in ("keys", "shares", "masked", "unmask"):
                errors: list[BaseException] = []

                def send(p: Party, step: str = step, errors: list[BaseException] = errors) -> None:
                    try:
                        getattr(p, step)(1)
                    except BaseException as exc:  # noqa: BLE001 - reported below
                        errors.append(exc)

                threads = [threading.Thread(target=send, args=(p,)) for p in group]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(timeout=60)
                assert errors == []
            assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
            rounds = client.get(f"/v1/federations/{fid}/rounds", headers=admin_headers).json()
            assert [r["number"] for r in rounds["items"]] == [1, 2]  # one version, once
            want = expected_model(client, fid, admin_headers, group)
            assert_model(client, fid, admin_headers, 1, want)

    def test_dp_noise_is_added_to_the_secure_sum(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        z, participants = 1.0, 3
        body = create_federation(
            client,
            admin_headers,
            strategy=SECURE_STRATEGY,
            privacy={
                "secure_aggregation": {"threshold": 2},
                "dp": {"clip_norm": CLIP, "noise_multiplier": z},
            },
        )
        fid = str(body["id"])
        group = parties(client, admin_headers, fid, participants)
        for step in ("keys", "shares", "masked", "unmask"):
            for p in group:
                getattr(p, step)(1)
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        exact = expected_model(client, fid, admin_headers, group)
        got = weights(client, fid, 1, admin_headers)
        noise = np.concatenate([(got[k] - exact[k]).ravel() for k in exact])
        # the coordinator adds N(0, (z C)^2) to the sum, then divides by the survivors:
        # std z C / m; 100 coordinates put the sample std within +-30% (about 4 sigma)
        assert np.std(noise) == pytest.approx(z * CLIP / participants, rel=0.3)
        federation = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert federation["privacy_spent"]["epsilon"] > 0


class TestAdvertisementDeadline:
    def _federation(self, client: TestClient, admin: dict[str, str], below_quorum: str) -> str:
        body = create_federation(
            client,
            admin,
            strategy=SECURE_STRATEGY,
            privacy={"secure_aggregation": {"threshold": 2, "clip_norm": CLIP}},
            rounds={
                "min_participants": 1,
                "max_rounds": 3,
                "deadline_seconds": 0.3,
                "below_quorum": below_quorum,
            },
        )
        return str(body["id"])

    def test_the_round_deadline_closes_it_without_the_absent(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid = self._federation(client, admin_headers, "extend")
        group = parties(client, admin_headers, fid, 3)
        present = group[:2]
        for p in present:
            p.keys(1)
        assert group[0].status(1)["phase"] == "advertise"  # the cohort is not complete
        close_due_phases(app)
        roster = group[0].status(1)["roster"]
        assert [e["participant"] for e in roster["entries"]] == [p.pid for p in present]
        # the absent member is not in the roster, and it is too late to join
        assert group[2].status(1)["roster"] is None
        group[2].start(1)
        assert group[2].machine is not None
        late = group[2].send(1, "keys", group[2].machine.advertise().to_dict())
        assert assert_problem(late, 409, "secagg-wrong-phase")["phase"] == "share"
        for step in ("shares", "masked", "unmask"):
            for p in present:
                getattr(p, step)(1)
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        assert_model(
            client, fid, admin_headers, 1, expected_model(client, fid, admin_headers, present)
        )

    def test_below_the_threshold_extend_waits_and_fail_fails(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        waiting = self._federation(client, admin_headers, "extend")
        failing = self._federation(client, admin_headers, "fail")
        lonely = [parties(client, admin_headers, fid, 2)[0] for fid in (waiting, failing)]
        for p in lonely:
            p.keys(1)
        before = client.get(f"/v1/federations/{waiting}/rounds/1", headers=admin_headers).json()
        close_due_phases(app)
        after = client.get(f"/v1/federations/{waiting}/rounds/1", headers=admin_headers).json()
        assert after["state"] == "open"
        assert after["deadline_at"] > before["deadline_at"]  # extended
        assert lonely[0].status(1)["phase"] == "advertise"
        failed = client.get(f"/v1/federations/{failing}/rounds/1", headers=admin_headers).json()
        assert failed["state"] == "failed"
        assert lonely[1].status(1)["phase"] == "aborted"
        assert "fewer than the threshold 2" in lonely[1].status(1)["abort_reason"]
