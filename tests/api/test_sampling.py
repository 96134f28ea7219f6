"""Client sampling through the API (every backend): the draw, who may upload, completeness
and quorum over the cohort, durability across a restart, and accounting at the rate q."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain import sampling
from coordinator.domain.accountant import fixed_size_epsilon, pld_epsilon
from coordinator.domain.specs import SamplingPolicy
from coordinator.store.models import RoundCohortMember
from coordinator.store.repository import RoundRepository
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    evaluate,
    federation_body,
    put_update,
    update_bytes,
    wait_round_closed,
)

DP_STRATEGY = {"name": "fedavg", "normalization": "total", "weighting": "uniform"}


def _round(client: TestClient, fid: str, number: int | str, headers: dict) -> dict[str, Any]:
    response = client.get(f"/v1/federations/{fid}/rounds/{number}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _sampled_federation(
    client: TestClient, app: FastAPI, admin: dict, n: int, sampling_spec: dict, **overrides: Any
) -> tuple[str, dict[str, dict[str, str]]]:
    """A federation with ``n`` participants whose round 1 has drawn its cohort."""
    rounds = {"min_participants": n, "max_rounds": 3, "sampling": sampling_spec}
    fid = create_federation(
        client, admin, rounds={**rounds, **overrides.pop("rounds", {})}, **overrides
    )["id"]
    parts = dict(enrol(client, admin, fid, f"p{i}") for i in range(n))
    app.state.worker.tick()  # enough participants now: the timer draws round 1's sample
    return fid, parts


class TestSpec:
    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ({"kind": "poisson"}, "takes `rate`"),
            ({"kind": "poisson", "rate": 0.5, "size": 3}, "takes `rate`"),
            ({"kind": "poisson", "rate": 0}, "greater than 0"),
            ({"kind": "poisson", "rate": 1.5}, "less than or equal to 1"),
            ({"kind": "fixed"}, "takes `size`"),
            ({"kind": "fixed", "size": 0}, "greater than or equal to 1"),
            ({"kind": "uniform", "rate": 0.5}, "poisson"),
        ],
    )
    def test_invalid_sampling_is_a_422(
        self, client: TestClient, admin_headers: dict, spec: dict, message: str
    ) -> None:
        response = client.post(
            "/v1/federations",
            json=federation_body(rounds={"max_rounds": 3, "sampling": spec}),
            headers=admin_headers,
        )
        body = assert_problem(response, 422, "validation-error")
        assert message in response.text, body

    def test_ease_cannot_be_sampled(self, client: TestClient, admin_headers: dict) -> None:
        response = client.post(
            "/v1/federations",
            json=federation_body(
                model={"kind": "ease", "num_items": 20},
                rounds={"max_rounds": 3, "sampling": {"kind": "fixed", "size": 2}},
            ),
            headers=admin_headers,
        )
        body = assert_problem(response, 422, "validation-error")
        assert body["field"] == "rounds.sampling"

    def test_policy_is_echoed(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(
            client,
            admin_headers,
            rounds={"max_rounds": 3, "sampling": {"kind": "poisson", "rate": 0.25}},
        )
        assert fed["rounds"]["sampling"] == {"kind": "poisson", "rate": 0.25, "size": None}


class TestDraw:
    def test_round_waits_for_enough_participants_then_draws_once(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid = create_federation(
            client,
            admin_headers,
            rounds={
                "min_participants": 3,
                "max_rounds": 3,
                "sampling": {"kind": "fixed", "size": 2},
            },
        )["id"]
        first, first_headers = enrol(client, admin_headers, fid, "p0")
        app.state.worker.tick()
        pending = _round(client, fid, 1, first_headers)
        assert pending["cohort_size"] is None  # 1 of 3 enrolled: not drawn yet
        assert pending["in_cohort"] is False
        body = update_bytes(round=1, base_version=0)
        assert_problem(put_update(client, fid, 1, body, first_headers), 409, "not-sampled")
        others = [enrol(client, admin_headers, fid, f"p{i}") for i in (1, 2)]
        app.state.worker.tick()
        drawn = _round(client, fid, 1, admin_headers)
        assert drawn["cohort_size"] == 2
        assert drawn["in_cohort"] is None  # the admin takes part in no round
        views = [
            _round(client, fid, 1, h)["in_cohort"] for h in (first_headers, *[h for _, h in others])
        ]
        assert sorted(views) == [False, True, True]
        # another tick (any process) never draws again
        ctx = app.state.context
        with ctx.read_sessions() as session:
            row = RoundRepository(session).get(fid, 1)
            assert row is not None
            before = sampling.round_cohort(session, row).members
        app.state.worker.tick()
        with ctx.read_sessions() as session:
            row = RoundRepository(session).get(fid, 1)
            assert row is not None
            assert sampling.round_cohort(session, row).members == before
            assert len(before) == 2
            assert sampling.cohort_count(session, row) == 2
            assert sampling.in_cohort(session, row, first) == (first in before)

    def test_sampled_out_upload_is_refused_and_cohort_completes_the_round(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid, parts = _sampled_federation(
            client, app, admin_headers, 5, {"kind": "fixed", "size": 2}
        )
        cohort = {pid for pid, h in parts.items() if _round(client, fid, 1, h)["in_cohort"]}
        assert len(cohort) == 2
        outsider = next(pid for pid in parts if pid not in cohort)
        body = update_bytes(round=1, base_version=0, seed=9)
        refused = assert_problem(
            put_update(client, fid, 1, body, parts[outsider]), 409, "not-sampled"
        )
        assert "wait for the next round" in refused["detail"]
        assert refused["round"] == 1
        for i, pid in enumerate(sorted(cohort)):
            upload = update_bytes(round=1, base_version=0, seed=i)
            assert put_update(client, fid, 1, upload, parts[pid]).status_code == 201
        # the two sampled updates complete the round: the other three are not waited for
        closed = wait_round_closed(client, fid, 1, admin_headers)
        assert closed["state"] == "closed"
        assert closed["update_count"] == 2
        round2 = _round(client, fid, 2, admin_headers)
        assert round2["cohort_size"] == 2  # drawn in the transaction that opened it

    def test_listing_tells_each_participant_its_rounds(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid, parts = _sampled_federation(
            client, app, admin_headers, 3, {"kind": "fixed", "size": 1}
        )
        seen = []
        for headers in parts.values():
            items = client.get(f"/v1/federations/{fid}/rounds", headers=headers).json()["items"]
            seen.append(items[0]["in_cohort"])
            assert items[0]["cohort_size"] == 1
        assert sorted(seen) == [False, False, True]

    def test_poisson_rate_one_draws_everyone(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid, parts = _sampled_federation(
            client, app, admin_headers, 4, {"kind": "poisson", "rate": 1.0}
        )
        assert _round(client, fid, 1, admin_headers)["cohort_size"] == 4
        assert all(_round(client, fid, 1, h)["in_cohort"] for h in parts.values())

    def test_quorum_at_the_deadline_counts_the_cohort(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        # quorum 3 but a cohort of 2: the deadline close needs min(3, 2) = 2 updates
        fid, parts = _sampled_federation(
            client,
            app,
            admin_headers,
            3,
            {"kind": "fixed", "size": 2},
            rounds={"deadline_seconds": 0.2, "below_quorum": "fail"},
        )
        cohort = [h for h in parts.values() if _round(client, fid, 1, h)["in_cohort"]]
        assert len(cohort) == 2
        body = update_bytes(round=1, base_version=0)
        assert put_update(client, fid, 1, body, cohort[0]).status_code == 201
        time.sleep(0.3)  # past the deadline (restarted at the draw)
        app.state.worker.tick()
        failed = _round(client, fid, 1, admin_headers)
        assert failed["state"] == "failed"  # 1 of the cohort's 2: below min(3, 2)
        # the next round draws afresh when it opens (a cohort smaller than the quorum
        # completes its round: test_sampled_out_upload_is_refused_and_cohort_completes...)
        assert _round(client, fid, 2, admin_headers)["cohort_size"] == 2


class TestDurability:
    def test_cohort_survives_a_restart(self, settings: Settings, admin_headers: dict) -> None:
        app = create_app(settings, run_timer=False)
        with TestClient(app) as client:
            fid, parts = _sampled_federation(
                client, app, admin_headers, 6, {"kind": "fixed", "size": 3}
            )
            before = {pid: _round(client, fid, 1, h)["in_cohort"] for pid, h in parts.items()}
        restarted = create_app(settings, run_timer=False)
        with TestClient(restarted) as client:
            restarted.state.worker.tick()  # a new process's timer does not draw again
            after = {pid: _round(client, fid, 1, h)["in_cohort"] for pid, h in parts.items()}
            assert after == before
            assert sum(after.values()) == 3
            with restarted.state.context.read_sessions() as session:
                stored = set(session.scalars(select(RoundCohortMember.participant_id)))
            assert stored == {pid for pid, member in before.items() if member}

    def test_two_replicas_racing_on_a_pending_draw_draw_once(
        self, settings: Settings, admin_headers: dict
    ) -> None:
        replicas = [create_app(settings, run_timer=False) for _ in range(2)]
        with TestClient(replicas[0]) as client, TestClient(replicas[1]):
            fid = create_federation(
                client,
                admin_headers,
                rounds={"min_participants": 5, "sampling": {"kind": "fixed", "size": 3}},
            )["id"]
            parts = dict(enrol(client, admin_headers, fid, f"p{i}") for i in range(5))
            barrier = threading.Barrier(len(replicas) * 2)

            def tick(app: FastAPI) -> None:
                barrier.wait()
                app.state.worker.tick()

            threads = [
                threading.Thread(target=tick, args=(app,)) for app in replicas for _ in range(2)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            with replicas[1].state.context.read_sessions() as session:
                stored = list(session.scalars(select(RoundCohortMember.participant_id)))
            assert len(stored) == 3  # one draw, however many timers raced for it
            members = {pid for pid, h in parts.items() if _round(client, fid, 1, h)["in_cohort"]}
            assert members == set(stored)


class TestDraws:
    def test_fixed_draws_exactly_size_and_varies(self) -> None:
        population = [f"p{i:02d}" for i in range(30)]
        policy = SamplingPolicy(kind="fixed", size=5)
        draws = [tuple(sampling.draw_cohort(policy, population)) for _ in range(20)]
        assert all(len(d) == 5 and len(set(d)) == 5 for d in draws)
        assert all(set(d) <= set(population) for d in draws)
        assert len(set(draws)) > 1  # a CSPRNG, not a fixed seed: 20 equal draws ~ 1e-100
        assert sampling.draw_cohort(SamplingPolicy(kind="fixed", size=50), population) == population

    def test_poisson_draws_at_the_rate(self) -> None:
        population = [f"p{i:04d}" for i in range(2000)]
        policy = SamplingPolicy(kind="poisson", rate=0.1)
        sizes = np.array([len(sampling.draw_cohort(policy, population)) for _ in range(20)])
        # each draw ~ Binomial(2000, 0.1): mean 200, std 13.4; the mean of 20 within 5 sigma
        assert abs(sizes.mean() - 200) < 5 * 13.4 / np.sqrt(20)
        assert len(set(sizes.tolist())) > 1


class TestAccounting:
    def test_reported_epsilon_is_pld_at_the_sampling_rate_and_stored_per_version(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        z, rate = 1.0, 0.5
        fid, parts = _sampled_federation(
            client,
            app,
            admin_headers,
            4,
            {"kind": "poisson", "rate": rate},
            strategy=DP_STRATEGY,
            privacy={"dp": {"clip_norm": 0.5, "noise_multiplier": z}},
        )
        first = _round(client, fid, 1, admin_headers)
        cohort = [h for h in parts.values() if _round(client, fid, 1, h)["in_cohort"]]
        assert len(cohort) == first["cohort_size"]
        for i, headers in enumerate(cohort):
            body = update_bytes(round=1, base_version=0, seed=i)
            assert put_update(client, fid, 1, body, headers).status_code == 201
        if not cohort:
            app.state.worker.tick()  # an empty draw still releases its noise-only step
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        version = client.get(f"/v1/federations/{fid}/models/1", headers=admin_headers).json()
        expected = pld_epsilon(z, rate, 1, 1e-5)
        assert version["privacy_spent"] == {
            "epsilon": pytest.approx(expected),
            "delta": 1e-5,
            "rounds": 1,
            "accountant": "pld",
            "sampling_rate": rate,
            "clip_norm": None,
            "next_clip_norm": None,
        }
        assert expected < pld_epsilon(z, 1.0, 1, 1e-5)  # amplification by sampling
        fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        # the federation reports its latest version's figure (an empty round-2 draw under
        # DP publishes its noise-only step at once, so that may be version 2 already)
        latest = client.get(
            f"/v1/federations/{fid}/models/{fed['latest_version']}", headers=admin_headers
        ).json()
        assert fed["privacy_spent"] == latest["privacy_spent"]
        assert fed["privacy_spent"]["rounds"] == fed["latest_version"]
        genesis = client.get(f"/v1/federations/{fid}/models/0", headers=admin_headers).json()
        assert genesis["privacy_spent"]["epsilon"] == 0.0
        # the figure is signed into the version's manifest too
        assert '"sampling_rate":0.5' in version["manifest"]

    def test_fixed_size_is_accounted_replace_one(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        z = 2.0
        fid, parts = _sampled_federation(
            client,
            app,
            admin_headers,
            4,
            {"kind": "fixed", "size": 2},
            strategy=DP_STRATEGY,
            privacy={"dp": {"clip_norm": 0.5, "noise_multiplier": z}},
        )
        cohort = [h for h in parts.values() if _round(client, fid, 1, h)["in_cohort"]]
        for i, headers in enumerate(cohort):
            body = update_bytes(round=1, base_version=0, seed=i)
            assert put_update(client, fid, 1, body, headers).status_code == 201
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        spent = client.get(f"/v1/federations/{fid}/models/1", headers=admin_headers).json()[
            "privacy_spent"
        ]
        assert spent["accountant"] == "rdp-replace-one"
        assert spent["sampling_rate"] == 0.5
        assert spent["epsilon"] == pytest.approx(fixed_size_epsilon(z, 4, 2, 1, 1e-5))


class TestBudget:
    def test_budget_stops_before_the_round_and_admin_gets_a_409(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        z, rate, delta = 1.0, 1.0, 1e-5
        budget = (pld_epsilon(z, rate, 1, delta) + pld_epsilon(z, rate, 2, delta)) / 2
        fid, parts = _sampled_federation(
            client,
            app,
            admin_headers,
            2,
            {"kind": "poisson", "rate": rate},
            strategy=DP_STRATEGY,
            deploy={"policy": "latest"},
            privacy={"dp": {"clip_norm": 0.5, "noise_multiplier": z, "max_epsilon": budget}},
            rounds={"max_rounds": 10},
        )
        for i, headers in enumerate(parts.values()):
            body = update_bytes(round=1, base_version=0, seed=i)
            assert put_update(client, fid, 1, body, headers).status_code == 201
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert fed["state"] == "evaluating"  # round 2 would exceed the budget: never opened
        assert fed["current_round"] is None
        forced = client.post(f"/v1/federations/{fid}/rounds/2/aggregate", headers=admin_headers)
        problem = assert_problem(forced, 409, "privacy-budget-exhausted")
        assert "max_epsilon" in problem["detail"]
        assert problem["max_epsilon"] == pytest.approx(budget)
        for headers in parts.values():
            assert evaluate(client, fid, 1, headers).status_code == 201
        done = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert done["state"] == "completed"
        assert done["privacy_spent"]["epsilon"] <= budget
        again = client.post(f"/v1/federations/{fid}/rounds/2/aggregate", headers=admin_headers)
        assert_problem(again, 409, "privacy-budget-exhausted")


class TestEmptyDraw:
    def _empty_draws(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # the CSPRNG says "out" to everyone: a Poisson draw that came up empty
        monkeypatch.setattr(sampling._RNG, "random", lambda: 0.999)

    def test_under_dp_an_empty_draw_releases_its_noise_only_step(
        self, client: TestClient, app: FastAPI, admin_headers: dict, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self._empty_draws(monkeypatch)
        fid, parts = _sampled_federation(
            client,
            app,
            admin_headers,
            2,
            {"kind": "poisson", "rate": 0.5},
            strategy=DP_STRATEGY,
            privacy={"dp": {"clip_norm": 0.5, "noise_multiplier": 1.0}},
        )
        assert _round(client, fid, 1, admin_headers)["cohort_size"] == 0
        assert not any(_round(client, fid, 1, h)["in_cohort"] for h in parts.values())
        app.state.worker.tick()
        closed = _round(client, fid, 1, admin_headers)
        assert closed["state"] == "closed"  # not skipped: skipping would reveal the empty draw
        version = client.get(f"/v1/federations/{fid}/models/1", headers=admin_headers).json()
        assert version["contributors"] == []
        assert version["privacy_spent"]["rounds"] == 1
        assert version["privacy_spent"]["epsilon"] == pytest.approx(pld_epsilon(1.0, 0.5, 1, 1e-5))

    def test_without_dp_an_empty_draw_fails_and_the_next_round_draws_again(
        self, client: TestClient, app: FastAPI, admin_headers: dict, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # rate 1 and a CSPRNG forced to 1.0 (it never returns that): nobody is drawn
        monkeypatch.setattr(sampling._RNG, "random", lambda: 1.0)
        fid, _parts = _sampled_federation(
            client, app, admin_headers, 2, {"kind": "poisson", "rate": 1.0}
        )
        # the draw's own transaction failed the empty round: nothing to release without DP
        assert _round(client, fid, 1, admin_headers)["state"] == "failed"
        assert _round(client, fid, 2, admin_headers)["cohort_size"] == 0
        monkeypatch.undo()
        app.state.worker.tick()
        assert _round(client, fid, 2, admin_headers)["state"] == "failed"
        third = _round(client, fid, 3, admin_headers)
        assert third["state"] == "open"
        assert third["cohort_size"] == 2  # drawn afresh, everyone at rate 1
        fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert fed["latest_version"] == 0
