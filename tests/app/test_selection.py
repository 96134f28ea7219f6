"""The recipe search: successive halving on validation, pinned choices, no test split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedrec.cli import _simulation_options, build_parser
from fedrec.options import SimulationOptions
from fedrec.partition import partition_users
from fedrec.selection import (
    PLAIN_BPR_EPOCHS,
    REFRESH_FACTOR,
    SUM_PATIENCE,
    SUM_STEP,
    Candidate,
    candidates_for,
    has_timestamps,
    ials_skip_reason,
    paired_tie,
    search_min_rounds,
    select_recipe,
    successive_halving,
    with_min_rounds,
)
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import Interactions, evaluate_loo, leave_one_out, loo_ranks


def _fake_arms(curves: dict[str, list[float]], trained: dict[str, int]):  # type: ignore[no-untyped-def]
    def arm(candidate: Candidate):  # type: ignore[no-untyped-def]
        def advance() -> None:
            trained[candidate.name] += 1

        def validate() -> float:
            return curves[candidate.name][trained[candidate.name] - 1]

        return advance, validate

    return arm


def test_successive_halving_keeps_the_better_half_and_picks_the_best() -> None:
    # "slow" starts behind but passes "fast" by round 6; "bad" is dropped at round 2
    curves = {
        "fast": [0.30, 0.31, 0.31, 0.31, 0.31, 0.31],
        "slow": [0.10, 0.25, 0.28, 0.30, 0.33, 0.36],
        "bad": [0.05, 0.06, 0.07, 0.08, 0.09, 0.10],
    }
    trained = dict.fromkeys(curves, 0)
    candidates = [Candidate(name, {}) for name in curves]
    selection = successive_halving(candidates, _fake_arms(curves, trained), (2, 6))
    assert selection.chosen.name == "slow"
    assert trained == {"fast": 6, "slow": 6, "bad": 2}  # bounded: the loser stopped early
    assert selection.scores["bad"] == {2: 0.06}
    assert selection.scores["slow"][6] == pytest.approx(0.36)
    report = selection.report()
    assert report["chosen"] == "slow"
    assert report["budgets"] == [2, 6]


def test_a_converged_candidate_stops_training_at_its_patience() -> None:
    curves = {"flat": [0.3] * 10, "rising": [0.1 * k for k in range(1, 11)]}
    trained = dict.fromkeys(curves, 0)
    candidates = [Candidate(name, {}) for name in curves]
    selection = successive_halving(candidates, _fake_arms(curves, trained), (10,), patience=2)
    assert trained == {"flat": 3, "rising": 10}
    assert selection.chosen.name == "rising"


def test_a_candidate_with_its_own_patience_trains_past_the_searchs() -> None:
    """The summed candidate's stop policy waits SUM_PATIENCE rounds: so does its arm."""
    curves = {"dip": [0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.4, 0.5], "flat": [0.3] * 8}
    trained = dict.fromkeys(curves, 0)
    candidates = [Candidate("dip", {"patience": 6}), Candidate("flat", {})]
    selection = successive_halving(candidates, _fake_arms(curves, trained), (8,), patience=2)
    assert trained == {"dip": 8, "flat": 3}
    assert selection.chosen.name == "dip"


def _near_tie_curves() -> dict[str, list[float]]:
    # "quick" leads by a hair at round 4 and levels off; "long" climbs on and leads at 8
    return {
        "quick": [0.20, 0.25, 0.28, 0.30, 0.30, 0.31, 0.31, 0.31],
        "long": [0.10, 0.15, 0.22, 0.29, 0.32, 0.35, 0.37, 0.40],
        "bad": [0.01] * 8,
    }


def test_a_near_tie_at_the_last_rung_trains_both_on_to_the_tie_budget() -> None:
    curves = _near_tie_curves()
    trained = dict.fromkeys(curves, 0)
    candidates = [Candidate(name, {}) for name in curves]
    asked: list[tuple[str, str]] = []

    def tied(a: Candidate, b: Candidate) -> bool:
        asked.append((a.name, b.name))
        return True

    selection = successive_halving(
        candidates, _fake_arms(curves, trained), (2, 4), tie_budget=8, tied=tied
    )
    assert asked == [("quick", "long")]  # the last rung's leader and runner-up, once
    assert selection.chosen.name == "long"
    assert trained == {"quick": 8, "long": 8, "bad": 2}
    assert selection.scores["long"] == {2: 0.15, 4: 0.29, 8: 0.40}
    assert selection.report()["budgets"] == [2, 4, 8]
    assert "within noise after 4 rounds" in selection.why


def test_a_clear_lead_or_no_tie_budget_chooses_at_the_last_rung() -> None:
    for tie_budget, answer in ((8, False), (None, True), (4, True)):
        curves = _near_tie_curves()
        trained = dict.fromkeys(curves, 0)
        candidates = [Candidate(name, {}) for name in curves]

        def tied(_a: Candidate, _b: Candidate, answer: bool = answer) -> bool:
            return answer

        selection = successive_halving(
            candidates, _fake_arms(curves, trained), (2, 4), tie_budget=tie_budget, tied=tied
        )
        assert selection.chosen.name == "quick"
        assert trained == {"quick": 4, "long": 4, "bad": 2}
        assert selection.report()["budgets"] == [2, 4]


def test_paired_tie_is_a_lead_below_the_paired_standard_errors() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(1000)
    noise = rng.normal(0.0, 0.1, 1000)
    # a lead of 0.001 against a paired s.e. of ~0.003: a tie
    assert paired_tie(base + noise + 0.001, base, se=2.0)
    # a lead of 0.02 (~6 s.e.): no tie; the runner-up ahead is a tie (no lead)
    assert not paired_tie(base + noise + 0.02, base, se=2.0)
    assert paired_tie(base, base + noise + 0.02, se=2.0)
    # nothing to compare
    assert not paired_tie(base[:1], base[:1], se=2.0)
    assert not paired_tie(base, base[:10], se=2.0)


def test_the_search_keeps_each_arms_per_user_validation_at_its_best_round() -> None:
    """ShortFederation's per-user NDCG@10 at its best round: its mean is the curve's best,
    and evaluate_loo's figure for that model."""
    from fedrec.short_federation import ShortFederation
    from participant_sdk.recsys import BPRConfig

    data = make_synthetic(num_users=40, num_items=80, interactions_per_user=(5, 12), seed=4)
    split = leave_one_out(data)
    groups = [np.arange(k, k + 1) for k in range(40)]
    federation = ShortFederation(
        split.train, groups, BPRConfig(dim=4, epochs=2, user_epochs=2), {"name": "fedavg"}
    )
    assert federation.best_per_user is None
    values = []
    for _ in range(3):
        federation.advance()
        values.append(federation.validate(split.valid))
    assert federation.best_per_user is not None
    assert federation.best_per_user.shape == (len(split.valid),)
    assert float(federation.best_per_user.mean()) == pytest.approx(max(values))


def test_search_min_rounds_is_the_last_gain_on_the_stop_policys_curve() -> None:
    # flat at popularity level for 4 rounds, a climb to round 9, then noise below the best
    curve = dict(
        enumerate([0.107, 0.107, 0.107, 0.106, 0.108, 0.110, 0.112, 0.113, 0.114, 0.113], 1)
    )
    assert search_min_rounds(curve, window=1, min_delta=0.0) == 9
    # a gain must exceed min_delta: from 0.110 (round 6), 0.112 is too small, 0.113 not;
    # from there 0.114 is too small
    assert search_min_rounds(curve, window=1, min_delta=0.0025) == 8
    # window 3: round 9's mean (0.1133) beats round 8's (0.113), round 10's (0.1135, two
    # values at the end of the curve) beats it
    assert search_min_rounds(curve, window=3, min_delta=0.0) == 10
    assert search_min_rounds({}, window=5, min_delta=0.0) is None


def test_the_full_federation_trains_at_least_until_the_winner_last_improved() -> None:
    curves = {
        # the winner starts flat, then climbs until round 5 and holds
        "slow": [0.10, 0.10, 0.10, 0.12, 0.15, 0.15],
        "flat": [0.11, 0.11, 0.11, 0.11, 0.11, 0.11],
        "bad": [0.01] * 6,
    }
    trained = dict.fromkeys(curves, 0)
    candidates = [Candidate(name, {}) for name in curves]
    selection = successive_halving(candidates, _fake_arms(curves, trained), (2, 6), patience=5)
    assert selection.chosen.name == "slow"
    assert selection.curves["slow"] == dict(enumerate(curves["slow"], 1))
    options = SimulationOptions(patience=5, validation_window=1, min_delta=0.0)
    chosen, told = with_min_rounds(options, selection)
    assert (chosen.min_rounds, told.min_rounds) == (5, 5)
    assert told.report()["min_rounds"] == 5
    assert (
        "trained at least 5 rounds because the search saw it improve until round 5"
        in (told.report()["why"])
    )
    assert chosen.round_policy()["min_rounds"] == 5
    # the user's own floor wins; without patience there is nothing to hold back
    pinned, kept = with_min_rounds(dataclasses.replace(options, min_rounds=2), selection)
    assert (pinned.min_rounds, kept.min_rounds) == (2, None)
    off, _ = with_min_rounds(dataclasses.replace(options, patience=None), selection)
    assert off.min_rounds is None
    assert "min_rounds" not in off.round_policy()
    # a winner that never improved after round 1 gets no floor (1 would hold nothing back)
    flat = dataclasses.replace(selection, curves={"slow": dict.fromkeys(range(1, 7), 0.2)})
    unchanged, said = with_min_rounds(options, flat)
    assert (unchanged.min_rounds, said.min_rounds, said.why) == (None, None, selection.why)


def test_min_rounds_on_the_command_line_is_checked_against_the_cap() -> None:
    args = build_parser().parse_args(["simulate", "--min-rounds", "30", "--rounds", "40"])
    assert _simulation_options(args, demo=False).round_policy()["min_rounds"] == 30
    args = build_parser().parse_args(["simulate", "--min-rounds", "50", "--rounds", "40"])
    with pytest.raises(SystemExit, match=r"min_rounds \(50\) exceeds max_rounds \(40\)"):
        _simulation_options(args, demo=False).round_policy()


def test_candidates_respect_pinned_choices_and_the_data() -> None:
    options = SimulationOptions()
    names = [c.name for c in candidates_for(options, timestamps=True)]
    assert names == ["bpr+fedavg", "bpr+fedadam", "ials+fedavg"]
    plain = candidates_for(options, timestamps=False)
    assert all(c.settings["recency_window"] == 0 for c in plain if c.settings["model"] == "bpr")

    pinned_model = dataclasses.replace(options, model="ials", pinned=("model",))
    only = candidates_for(pinned_model, timestamps=True)
    assert [c.name for c in only] == ["ials+fedavg"]
    assert "model" not in only[0].settings

    pinned_optimizer = dataclasses.replace(
        options, server_optimizer="fedyogi", server_lr=None, pinned=("server_optimizer",)
    )
    found = candidates_for(pinned_optimizer, timestamps=True)
    assert [c.name for c in found] == ["bpr+fedyogi", "ials+fedyogi"]
    assert all(c.apply(pinned_optimizer).server_optimizer == "fedyogi" for c in found)

    pinned_epochs = dataclasses.replace(options, local_epochs=3, pinned=("local_epochs",))
    for candidate in candidates_for(pinned_epochs, timestamps=False):
        assert candidate.apply(pinned_epochs).local_epochs == 3


def test_ials_is_left_out_when_participants_hold_fewer_users_than_factors() -> None:
    options = SimulationOptions(dim=16)
    # one user per participant (cross-device): FCF's local preconditioner has rank 1
    per_user = candidates_for(options, timestamps=True, users_per_participant=1)
    assert [c.name for c in per_user] == ["bpr+fedavg", "bpr+fedadam"]
    assert "16 factors" in (ials_skip_reason(16, 1) or "")
    # silos with at least as many users as factors keep it
    silos = candidates_for(options, timestamps=True, users_per_participant=16)
    assert "ials+fedavg" in [c.name for c in silos]
    assert ials_skip_reason(16, 16) is None
    # cross-device BPR also tries a step sized for the sum of the devices' deltas
    devices = candidates_for(options, timestamps=True, users_per_participant=1, participants=500)
    summed = [c for c in devices if c.name == "bpr+fedavg-sum"]
    assert len(summed) == 1
    assert summed[0].settings["server_lr"] == pytest.approx(SUM_STEP * 500)
    applied = summed[0].apply(options).strategy()
    assert (applied["normalization"], applied["weighting"]) == ("total", "uniform")
    # its noisy, long climb gets a longer patience; a longer one or none (0) is kept
    assert summed[0].apply(options).patience == SUM_PATIENCE > (options.patience or 0)
    for patience in (SUM_PATIENCE + 10, None):
        kept = dataclasses.replace(options, patience=patience)
        (summed_kept,) = [
            c
            for c in candidates_for(kept, timestamps=True, users_per_participant=1, participants=9)
            if c.name == "bpr+fedavg-sum"
        ]
        assert summed_kept.apply(kept).patience == patience
    # the silo candidates keep the user's patience
    assert all("patience" not in c.settings for c in devices if c.name != "bpr+fedavg-sum")
    assert "bpr+fedavg-sum" not in [
        c.name
        for c in candidates_for(options, timestamps=True, users_per_participant=16, participants=5)
    ]
    # the coordinator's largest step bounds it
    huge = candidates_for(options, timestamps=True, users_per_participant=1, participants=10**6)
    assert max(c.settings.get("server_lr") or 0 for c in huge) <= 1000
    # a user who pins the model gets it anyway
    pinned = dataclasses.replace(options, model="ials", pinned=("model",))
    assert [c.name for c in candidates_for(pinned, timestamps=True, users_per_participant=1)] == [
        "ials+fedavg"
    ]


def test_a_per_user_search_reports_why_ials_was_left_out() -> None:
    data = make_synthetic(num_users=40, num_items=60, seed=5)
    split = leave_one_out(data)
    groups = partition_users(split.train, "per-user")
    options = SimulationOptions(dim=8, local_epochs=1, rounds=50)
    _chosen, selection = select_recipe(options, split.train, split.valid, groups, budgets=(1, 2))
    assert "ials+fedavg" not in selection.scores
    assert "bpr+fedavg-sum" in selection.scores
    report = selection.report()
    assert "fewer than the 8 factors" in report["left_out"]["ials"]
    assert report["chosen"] in {"bpr+fedavg", "bpr+fedadam", "ease"}


def test_the_command_line_pins_what_the_user_set() -> None:
    args = build_parser().parse_args(["simulate", "--model", "ials", "--local-epochs", "2"])
    options = _simulation_options(args, demo=False)
    assert set(options.pinned) == {"model", "local_epochs"}
    assert (options.model, options.local_epochs, options.recipe) == ("ials", 2, "auto")
    fixed = _simulation_options(build_parser().parse_args(["simulate", "--no-auto"]), demo=False)
    assert fixed.recipe == "fixed"
    assert fixed.pinned == ()


@pytest.mark.slow
def test_the_search_scores_validation_only_and_applies_the_winner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = make_synthetic(num_users=60, num_items=80, seed=3)
    split = leave_one_out(data)
    groups = partition_users(data, "iid", 2, seed=0)
    scored: list[Interactions] = []

    def spy(score, train, targets, **kwargs):
        scored.append(targets)
        return evaluate_loo(score, train, targets, **kwargs)

    def ranks_spy(score, train, targets, **kwargs):
        scored.append(targets)
        return loo_ranks(score, train, targets, **kwargs)

    monkeypatch.setattr("fedrec.short_federation.loo_ranks", ranks_spy)
    monkeypatch.setattr("fedrec.ease_search.evaluate_loo", spy)
    options = SimulationOptions(dim=8, local_epochs=1, rounds=50)
    chosen, selection = select_recipe(options, split.train, split.valid, groups, budgets=(1, 2))
    assert has_timestamps(split.train)
    # 3 candidates for 1 round, the better 2 for one more: 5 evaluations, plus one per
    # lambda of EASE's closed form, all on validation
    assert selection.ease is not None
    lambdas = selection.ease["validation_ndcg@10_by_lambda"]
    assert len(lambdas) >= 6
    assert len(scored) == 5 + len(lambdas)
    test_pairs = set(zip(split.test.users.tolist(), split.test.items.tolist(), strict=True))
    for targets in scored:
        assert np.array_equal(targets.items, split.valid.items)
        assert not test_pairs & set(
            zip(targets.users.tolist(), targets.items.tolist(), strict=True)
        )
    # the test items are not in what the short federations train on either
    train_pairs = set(zip(split.train.users.tolist(), split.train.items.tolist(), strict=True))
    assert not test_pairs & train_pairs
    assert selection.chosen in selection.candidates
    for key, value in selection.chosen.settings.items():
        assert getattr(chosen, key) == value
    assert chosen.server_lr is not None


def test_a_short_federation_trains_each_round_at_the_scheduled_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typing import Any

    from fedrec.short_federation import ShortFederation
    from participant_sdk.recsys import BPRConfig, BPRTrainer

    data = make_synthetic(num_users=12, num_items=40, seed=1)
    rates: list[float | None] = []
    train_round = BPRTrainer.train_round

    def recorded(self: BPRTrainer, *args: Any, **kwargs: Any) -> Any:
        rates.append(kwargs.get("learning_rate"))
        return train_round(self, *args, **kwargs)

    monkeypatch.setattr(BPRTrainer, "train_round", recorded)
    groups = [np.arange(6), np.arange(6, 12)]
    config = BPRConfig(dim=4, learning_rate=0.08, round_decay=0.5)
    federation = ShortFederation(data, groups, config, {"name": "fedavg"})
    federation.advance()
    federation.advance()
    # two devices a round: 0.08 in round 1, 0.04 in round 2, as the SDK's devices train
    assert rates == pytest.approx([0.08, 0.08, 0.04, 0.04])


def test_cross_device_bpr_candidates_refresh_their_users() -> None:
    options = SimulationOptions(dim=16)
    devices = candidates_for(options, timestamps=True, users_per_participant=1, participants=50)
    refreshed = {c.name: c.apply(options).bpr_config().user_epochs for c in devices}
    # the touched-mean candidates: twice as many user-only epochs as local epochs; the
    # summed step none (it alternated with the refresh)
    assert REFRESH_FACTOR == 2
    assert refreshed == {
        "bpr+fedavg": 2 * options.local_epochs,
        "bpr+fedadam": 2 * options.local_epochs,
        "bpr+fedavg-sum": 0,
    }
    plain = candidates_for(options, timestamps=False, users_per_participant=1, participants=50)
    assert {c.name: c.settings.get("user_epochs") for c in plain} == {
        "bpr+fedavg": 2 * PLAIN_BPR_EPOCHS,
        "bpr+fedadam": 2 * PLAIN_BPR_EPOCHS,
        "bpr+fedavg-sum": None,
    }
    # silos train as before
    silos = candidates_for(options, timestamps=True, users_per_participant=16, participants=5)
    assert all(c.apply(options).user_epochs == 0 for c in silos)
    # a pinned --user-epochs (0 turns the refresh off) or --local-epochs is the user's
    off = dataclasses.replace(options, user_epochs=0, pinned=("user_epochs",))
    for c in candidates_for(off, timestamps=True, users_per_participant=1, participants=50):
        assert c.apply(off).user_epochs == 0
    three = dataclasses.replace(options, local_epochs=3, pinned=("local_epochs",))
    for c in candidates_for(three, timestamps=False, users_per_participant=1, participants=50):
        if c.name != "bpr+fedavg-sum":
            assert c.apply(three).bpr_config().user_epochs == 6
