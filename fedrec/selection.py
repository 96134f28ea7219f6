"""The automatic recipe choice of ``fedrec simulate``: successive halving on validation.

No single recipe is best on every data set (bench/RESULTS.md, "Defaults across data"):
BPR with a large FedAvg step wins on time-ordered movie ratings, confidence-weighted ALS
on counts with many items. So the simulation runs a few candidate recipes as short
in-process federations (:class:`~fedrec.short_federation.ShortFederation`) on the
training split, scores each on the validation split, keeps the better half at each
budget, and trains the full federation with the winner. Closed-form EASE is a candidate
too (:mod:`fedrec.ease_search`): it needs no rounds, so its best validation NDCG@10 over
its λ grid is compared with the halving's winner at the final rung, unless its cost
guard leaves it out (the selection then says why). The search receives only the
training interactions and the validation targets: the test split cannot be touched.

Choices the user pinned (``--model``, ``--server-optimizer``, ``--server-lr``,
``--local-epochs``, ``--user-epochs``, ``--recency-window``) are kept in every candidate;
the search covers the rest.

The search also tells the full federation how long not to give up: it trains the same
deterministic federation as the winner's arm, so a slow start the search saw end is no
plateau. The winner's ``min_rounds`` (the round policy's floor under patience) is the last
round at which its arm's validation curve improved, by the stop policy's own rule
(:func:`search_min_rounds`), unless the user set ``--min-rounds``.

Where participants hold fewer users than factors, a lead at the last rung smaller than
:data:`TIE_SE` paired standard errors is no choice: the two leaders train on to
:data:`TIE_BUDGET_FACTOR` times that rung and the better there wins.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coordinator.domain.validation_curve import last_improvement, smoothed
from fedrec.ease_search import (
    EaseValidation,
    available_memory_bytes,
    ease_cost,
    ease_skip_reason,
    validate_ease,
)
from fedrec.options import SimulationOptions
from fedrec.short_federation import ShortFederation
from participant_sdk.recsys import Interactions

__all__ = [
    "BUDGETS",
    "Candidate",
    "Selection",
    "candidates_for",
    "has_timestamps",
    "ials_skip_reason",
    "paired_tie",
    "search_min_rounds",
    "select_recipe",
    "successive_halving",
    "with_ease",
    "with_min_rounds",
]

# Cumulative rounds at which the candidates are compared: every candidate trains 4
# rounds, the better half continues to 12. A short last rung favours recipes that start
# fast and plateau (implicit ALS leads BPR on ML-100K at round 4-8, then BPR passes
# it): 12 rounds let a slower climber show its slope (bench/RESULTS.md).
BUDGETS: tuple[int, ...] = (4, 12)
# A BPR epoch without recency weighting is a full pass (8x a recency-weighted one on
# ML-100K: see fedrec.options), so without timestamps fewer local epochs are the
# same amount of work per round.
PLAIN_BPR_EPOCHS = 2
# Cross-device BPR (one user or a few per participant): the "touched" mean of the
# participants' deltas moves an item by about one device's step, while a central epoch
# moves it by the sum over its users, so per user it learns ~100x slower on ML-100K
# (validation NDCG@10 0.033 after 12 rounds against 0.069 for 5 silos). The sum
# candidate averages over all K participants with equal weights and steps server_lr =
# SUM_STEP * K, i.e. SUM_STEP x the sum of the deltas. 0.2 over 0.1 (the tuned bench's
# server_lr 100 at K = 943) on ML-100K per-user validation: best 0.0851 against 0.0813,
# reached in 19 rounds against 21 (bench/RESULTS.md, "The per-user default path").
# Capped at the coordinator's largest server_lr.
SUM_STEP = 0.2
MAX_SERVER_LR = 1000.0
# EASE's search says each λ as it is done when its estimate is at least this long
EASE_PROGRESS_SECONDS = 30.0
# The sum candidate's stop policy waits longer: its validation curve climbs for a long
# time through dips of several rounds (each round moves every item by a fifth of the sum
# of its devices' steps). On ML-100K per user the default patience of 5 stopped at a
# local maximum (0.0851 at round 19, stopped at 24); the curve passed it again at round
# 32 and was still climbing at round 45 (0.0913), above the centralized model's 0.0862
# (bench/RESULTS.md, "The per-user default path"). A patience the user chose above this
# is kept; with none (0) every round up to the cap runs.
SUM_PATIENCE = 15
# Cross-device BPR's user refresh runs this many times the local epochs: on light users
# (`sparse`, 1,000 users, validation) refresh 16 against 8 was ahead on 4 of 4 seeds
# (0.1269 against 0.1242 deployed), on 2,000 users on 2 of 2, and on music-heavy (4
# against 2: 0.1557 against 0.1495) (bench/RESULTS.md, "peruser-sparse").
REFRESH_FACTOR = 2
# The cross-device arms climb at very different speeds: the summed step is flat for ten
# rounds and then climbs for fifty, a touched mean with the refresh starts fast and
# levels off sooner. When the last rung's two leaders are within TIE_SE paired standard
# errors of each other (per-user validation NDCG@10 at each arm's best round), both train
# on to TIE_BUDGET_FACTOR times the last rung and the choice is made there: on
# movies-dated the refreshed touched arm leads the summed one at round 12 (0.0543 against
# 0.0525, within noise) and trails it at 24 (0.0647 against 0.0674); the summed path
# deploys 0.0778, the touched one 0.0653 (bench/RESULTS.md, "peruser-light").
TIE_SE = 2.0
TIE_BUDGET_FACTOR = 2


def ials_skip_reason(dim: int, users_per_participant: float | None) -> str | None:
    """Why implicit ALS is no candidate for this partition, or None.

    FCF's participant preconditions its item step with its own Hessian, whose data part
    ``Σ_u x_u x_uᵀ`` has rank at most its number of users: with fewer users than factors
    (cross-device: one) the step along the missing directions is set by the regulariser
    alone, and the mean of such steps is not the ALS item solve. Measured per user on
    ML-100K: test NDCG@10 0.51 × centralized, and each device solves one ``dim × dim``
    system per catalog item per round (~280 s for one in-process round of 943 devices).
    """
    if users_per_participant is None or users_per_participant >= dim:
        return None
    return (
        f"implicit ALS left out: the median participant holds {users_per_participant:g} "
        f"user(s), fewer than the {dim} factors its local item step needs (FCF's per-participant "
        "preconditioner is rank-deficient; use --model ials to force it)"
    )


@dataclass(frozen=True)
class Candidate:
    """One recipe: the option fields it sets."""

    name: str
    settings: dict[str, Any]

    def apply(self, options: SimulationOptions) -> SimulationOptions:
        return dataclasses.replace(options, **self.settings)


def has_timestamps(data: Interactions) -> bool:
    """Real timestamps: known, and not all the same (recency needs an order)."""
    known = data.timestamps[np.isfinite(data.timestamps)]
    return known.size == len(data) and known.size > 0 and bool(np.ptp(known) > 0)


def candidates_for(
    options: SimulationOptions,
    *,
    timestamps: bool,
    users_per_participant: float | None = None,
    participants: int | None = None,
) -> list[Candidate]:
    """The candidate recipes that make sense for this data, pinned choices kept.

    BPR uses recency weighting only where timestamps exist (else a plain epoch, fewer
    of them); ALS is valid with or without strengths (without, every confidence is the
    same and it is plain implicit ALS). When the median participant holds fewer users
    than the model has factors (cross-device), ALS is left out unless pinned
    (:func:`ials_skip_reason`), BPR gains a candidate that steps by a fraction of the
    sum of the deltas (:data:`SUM_STEP`) over the ``participants``, and the other BPR
    candidates refit their users before each round (``user_epochs``).
    """
    bpr: dict[str, Any] = (
        {"recency_window": options.recency_window, "local_epochs": options.local_epochs}
        if timestamps
        else {"recency_window": 0, "local_epochs": PLAIN_BPR_EPOCHS}
    )
    cross_device = ials_skip_reason(options.dim, users_per_participant) is not None
    refresh: dict[str, Any] = {}
    if cross_device:
        # A device refits its user's factors to the round's base items before training
        # (BPRConfig.user_epochs, REFRESH_FACTOR times the local epochs): its user
        # vector is trained only there, a few steps a round, while the items it pairs with
        # move every round, so without the refresh the device's item deltas come from a
        # user fitted to last round's items. For the touched-mean candidates: validation
        # NDCG@10 on light users (`sparse`) 0.1105 -> 0.1264 at round 20 (central 0.1298).
        # The summed candidate keeps none: its step already moves every item by a fifth
        # of its users' summed pull, and with both sides fitted at once it alternated on
        # `sparse`, deployed lower on movies-dated (0.0755 vs 0.0778) and the same on
        # ML-100K (0.0898 vs 0.0891) (bench/RESULTS.md, "peruser-step"). Silos keep none
        # (unmeasured; their default is at 0.98 x central already).
        pinned_epochs = "local_epochs" in options.pinned
        epochs = options.local_epochs if pinned_epochs else bpr["local_epochs"]
        refresh = {"user_epochs": REFRESH_FACTOR * epochs}
    recipes = [
        Candidate(
            "bpr+fedavg",
            {"model": "bpr", "server_optimizer": "fedavg", "server_lr": 2.0, **refresh},
        ),
        Candidate(
            "bpr+fedadam",
            {"model": "bpr", "server_optimizer": "fedadam", "server_lr": 0.1, **refresh},
        ),
        Candidate("ials+fedavg", {"model": "ials", "server_optimizer": "fedavg", "server_lr": 1.0}),
    ]
    if cross_device and participants:
        summed: dict[str, Any] = {"normalization": "total", "weighting": "uniform"}
        step = round(min(SUM_STEP * participants, MAX_SERVER_LR), 6)
        if options.patience is not None:
            summed["patience"] = max(options.patience, SUM_PATIENCE)
        recipes.append(
            Candidate(
                "bpr+fedavg-sum",
                {"model": "bpr", "server_optimizer": "fedavg", "server_lr": step, **summed},
            )
        )
    pinned = set(options.pinned)
    chosen: list[Candidate] = []
    for recipe in recipes:
        settings = dict(recipe.settings)
        if "model" in pinned and settings["model"] != options.model:
            continue
        if settings["model"] == "ials" and "model" not in pinned and cross_device:
            continue
        if settings["model"] == "bpr":
            settings.update(bpr)
        name = recipe.name
        if "server_optimizer" in pinned:
            # the user's optimizer for every model; its step: theirs, or its default
            name = f"{settings['model']}+{options.server_optimizer}"
            del settings["server_optimizer"]
            settings["server_lr"] = None
        settings = {k: v for k, v in settings.items() if k not in pinned}
        if all(c.name != name for c in chosen):
            chosen.append(Candidate(name, settings))
    return chosen


@dataclass
class Selection:
    """What the search tried, how each scored, and which it chose."""

    candidates: list[Candidate]
    budgets: tuple[int, ...]
    scores: dict[str, dict[int, float]]
    chosen: Candidate
    why: str
    # the EASE candidate's λ scores, or why it was skipped (None: not a candidate)
    ease: dict[str, Any] | None = None
    # candidates left out for this data or partition, and why
    left_out: dict[str, str] = dataclasses.field(default_factory=dict)
    # each candidate's validation NDCG@10 round by round (its arm's curve)
    curves: dict[str, dict[int, float]] = dataclasses.field(default_factory=dict)
    # the full federation's floor under patience, from the winner's curve (None: none set)
    min_rounds: int | None = None

    def report(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "candidates": {c.name: c.settings for c in self.candidates},
            "budgets": list(self.budgets),
            "validation_ndcg@10": {
                name: {str(b): (None if math.isinf(v) else round(v, 5)) for b, v in s.items()}
                for name, s in self.scores.items()
            },
            "chosen": self.chosen.name,
            "why": self.why,
        }
        if self.ease is not None:
            found["ease"] = self.ease
        if self.left_out:
            found["left_out"] = dict(self.left_out)
        if self.min_rounds is not None:
            found["min_rounds"] = self.min_rounds
        return found


Arm = Callable[[Candidate], tuple[Callable[[], None], Callable[[], float]]]


def successive_halving(
    candidates: Sequence[Candidate],
    arm: Arm,
    budgets: Sequence[int] = BUDGETS,
    *,
    workers: int = 1,
    patience: int | None = None,
    log: Callable[[str], None] = lambda _m: None,
    tie_budget: int | None = None,
    tied: Callable[[Candidate, Candidate], bool] | None = None,
) -> Selection:
    """Train every candidate to each budget (cumulative rounds), keep the better half.

    ``arm(candidate)`` gives an ``advance()`` (one round) and a ``validate()``
    (validation NDCG@10). A candidate's score at a budget is its best validation so
    far, as the federation deploys its best version; a candidate stops training once
    ``patience`` rounds in a row did not beat it (its own ``patience`` setting where it
    has one, as its federation's stop policy would stop it there too). Ties go to the
    earlier candidate. With ``tie_budget`` and ``tied``: when ``tied(leader,
    runner_up)`` says the last rung's two best are not told apart, both train on to
    ``tie_budget`` rounds and the better there wins.
    Bounded: at most ``len(candidates) * budgets[-1]`` rounds in all, plus
    ``2 * tie_budget``.
    """
    arms = {c.name: arm(c) for c in candidates}
    alive = list(candidates)
    scores: dict[str, dict[int, float]] = {c.name: {} for c in candidates}
    best = {c.name: float("-inf") for c in candidates}
    trained = 0

    stale = {c.name: 0 for c in candidates}
    curves: dict[str, dict[int, float]] = {c.name: {} for c in candidates}

    def run(candidate: Candidate, rounds: int) -> None:
        advance, validate = arms[candidate.name]
        curve = curves[candidate.name]
        own = None if patience is None else candidate.settings.get("patience", patience)
        for _ in range(rounds):
            if own is not None and stale[candidate.name] >= own:
                return  # converged: more rounds would not change its score
            advance()
            value = validate()
            curve[len(curve) + 1] = value
            stale[candidate.name] = 0 if value > best[candidate.name] else stale[candidate.name] + 1
            best[candidate.name] = max(best[candidate.name], value)

    ranked = list(alive)
    done = tuple(budgets)
    extended = ""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for budget in budgets:
            rounds = [budget - trained] * len(alive)
            list(pool.map(run, alive, rounds))
            trained = budget
            for c in alive:
                scores[c.name][budget] = best[c.name]
            ranked = sorted(alive, key=lambda c: -best[c.name])  # stable: ties keep order
            shown = ", ".join(f"{c.name} {best[c.name]:.4f}" for c in ranked)
            log(f"after {budget} rounds, validation NDCG@10: {shown}")
            if len(alive) == 1:
                break
            alive = ranked[: max(1, math.ceil(len(alive) / 2))]
        if (
            tie_budget is not None
            and tied is not None
            and tie_budget > trained
            and len(ranked) >= 2
            and tied(ranked[0], ranked[1])
        ):
            pair = ranked[:2]
            extended = f"{pair[0].name} and {pair[1].name} within noise after {trained} rounds"
            log(f"{extended}: both train on to {tie_budget}")
            list(pool.map(run, pair, [tie_budget - trained] * 2))
            trained = tie_budget
            done = (*done, tie_budget)
            for c in pair:
                scores[c.name][tie_budget] = best[c.name]
            alive = sorted(pair, key=lambda c: -best[c.name])
            shown = ", ".join(f"{c.name} {best[c.name]:.4f}" for c in alive)
            log(f"after {tie_budget} rounds, validation NDCG@10: {shown}")
    winner = max(alive, key=lambda c: best[c.name])
    why = (
        f"highest validation NDCG@10 ({best[winner.name]:.4f}) after {trained} rounds of "
        f"successive halving over {len(candidates)} candidates"
        + (f" ({extended})" if extended else "")
        if len(candidates) > 1
        else "the only candidate left by the pinned choices"
    )
    return Selection(list(candidates), done, scores, winner, why, curves=curves)


def paired_tie(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], *, se: float) -> bool:
    """Whether ``a`` (the leader's per-user scores) is ahead of ``b`` (the same users' under
    the runner-up) by less than ``se`` standard errors of the paired mean difference."""
    if a.shape != b.shape or a.size < 2:
        return False
    diff = a - b
    spread = float(diff.std(ddof=1)) / math.sqrt(diff.size)
    return float(diff.mean()) < se * spread


def search_min_rounds(curve: dict[int, float], *, window: int, min_delta: float) -> int | None:
    """The last round at which ``curve`` (an arm's validation by round) improved, read as
    the stop policy reads a federation's: smoothed over ``window``, a gain only above
    ``min_delta``. None for an empty curve."""
    return last_improvement(smoothed(curve, window), min_delta)


def with_min_rounds(
    options: SimulationOptions, selection: Selection
) -> tuple[SimulationOptions, Selection]:
    """The chosen options with ``min_rounds`` from the winner's search curve, unless the
    user set one, patience is off, the winner has no curve (EASE, a lone candidate), or
    it never improved after its first round (a floor of 1 holds nothing back)."""
    curve = selection.curves.get(selection.chosen.name)
    if options.min_rounds is not None or options.patience is None or not curve:
        return options, selection
    found = search_min_rounds(curve, window=options.validation_window, min_delta=options.min_delta)
    if found is None or found <= 1:
        return options, selection
    why = (
        f"{selection.why}; trained at least {found} rounds because the search saw it "
        f"improve until round {found}"
    )
    return (
        dataclasses.replace(options, min_rounds=found),
        dataclasses.replace(selection, why=why, min_rounds=found),
    )


def select_recipe(
    options: SimulationOptions,
    train: Interactions,
    valid: Interactions,
    groups: Sequence[npt.NDArray[np.int64]],
    *,
    budgets: Sequence[int] = BUDGETS,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[SimulationOptions, Selection]:
    """Choose the recipe on ``valid`` from short federations on ``train`` (and EASE's
    closed form); return the options with the winner applied (and its ``min_rounds``:
    :func:`with_min_rounds`), and the selection."""
    per_participant = float(np.median([users.size for users in groups])) if groups else None
    candidates = candidates_for(
        options,
        timestamps=has_timestamps(train),
        users_per_participant=per_participant,
        participants=len(groups),
    )
    left_out: dict[str, str] = {}
    ials_skipped = ials_skip_reason(options.dim, per_participant)
    if ials_skipped is not None and "model" not in options.pinned:
        left_out["ials"] = ials_skipped
        log(ials_skipped)
    budgets = tuple(min(b, options.rounds) for b in budgets)
    ease = _ease_candidate(options, train, valid, len(groups), log)

    federations: dict[str, ShortFederation] = {}

    def arm(candidate: Candidate) -> tuple[Callable[[], None], Callable[[], float]]:
        chosen = _resolved(candidate.apply(options))
        federation = federations[candidate.name] = ShortFederation(
            train,
            groups,
            chosen.trainer_config(),
            chosen.strategy(),
            window=chosen.validation_window,
            min_delta=chosen.min_delta,
        )
        return federation.advance, lambda: federation.validate(valid)

    if not candidates:
        # the pinned choices leave EASE alone: its validation per λ is the whole search
        if ease is None or not ease.scores:
            why = ease.skipped if ease is not None and ease.skipped else "no candidate matches"
            raise ValueError(f"the pinned choices leave no recipe to search ({why})")
        alone = Candidate("ease", {"model": "ease", "ease_lambdas": ease.lambdas})
        return _resolved(alone.apply(options)), Selection(
            [alone],
            (),
            {alone.name: {0: ease.best}},
            alone,
            f"EASE, the only candidate left by the pinned choices (lambda {ease.best_lambda:g} "
            f"best on validation, {ease.best:.4f})",
            ease.report(),
            left_out,
        )
    if len(candidates) == 1 and (ease is None or not ease.scores):
        only = candidates[0]
        return _resolved(only.apply(options)), Selection(
            candidates,
            (),
            {only.name: {}},
            only,
            "the only candidate left by the pinned choices",
            None if ease is None else ease.report(),
            left_out,
        )

    def tied(leader: Candidate, runner_up: Candidate) -> bool:
        a = federations[leader.name].best_per_user
        b = federations[runner_up.name].best_per_user
        return a is not None and b is not None and paired_tie(a, b, se=TIE_SE)

    # cross-device only, where the arms' speeds differ (TIE_SE); silos choose as before
    tie_budget = (
        min(TIE_BUDGET_FACTOR * budgets[-1], options.rounds)
        if ials_skipped is not None and budgets
        else None
    )
    selection = successive_halving(
        candidates,
        arm,
        budgets,
        workers=min(options.workers, 2),
        patience=options.patience,
        log=log,
        tie_budget=tie_budget,
        tied=tied,
    )
    if ease is not None:
        selection = with_ease(selection, ease)
    selection.left_out = left_out
    return with_min_rounds(_resolved(selection.chosen.apply(options)), selection)


def _ease_candidate(
    options: SimulationOptions,
    train: Interactions,
    valid: Interactions,
    participants: int,
    log: Callable[[str], None],
) -> EaseValidation | None:
    """EASE's validation per λ; None when a pinned model excludes it; scores empty and
    the reason given when its cost guard skips it."""
    if "model" in options.pinned and options.model != "ease":
        return None
    num_users = int(np.unique(train.users).size)
    skipped = ease_skip_reason(
        train.num_items, num_users, participants, available_bytes=available_memory_bytes()
    )
    if skipped is not None:
        log(f"ease skipped: {skipped}")
        cost = ease_cost(train.num_items, num_users, participants).report()
        return EaseValidation({}, skipped=skipped, cost=cost)
    estimate = ease_cost(train.num_items, num_users, participants).search_seconds
    progress = None
    if estimate >= EASE_PROGRESS_SECONDS:
        # a large catalogue: minutes of solves before the summary line, so say each λ
        log(f"ease: solving and validating each lambda (~{estimate / 60:.0f} CPU minutes in all)")

        def progress(lam: float, value: float, seconds: float) -> None:
            log(f"  ease lambda {lam:g}: validation NDCG@10 {value:.4f} ({seconds:.0f} s so far)")

    found = validate_ease(train, valid, participants=participants, progress=progress)
    shown = ", ".join(f"{lam:g}: {value:.4f}" for lam, value in found.scores.items())
    pruned = f", B pruned to {found.top_k} per column" if found.top_k else ""
    log(
        f"ease (closed form, {found.route} solve{pruned}, {found.seconds:.1f} s), "
        f"validation NDCG@10 by lambda: {shown}"
    )
    return found


def with_ease(selection: Selection, ease: EaseValidation) -> Selection:
    """The selection with EASE as a candidate: it wins if its best validation NDCG@10 beats
    the halving winner's at the final rung (ties keep the iterative winner)."""
    report = ease.report()
    if not ease.scores:
        return dataclasses.replace(selection, ease=report)
    candidate = Candidate("ease", {"model": "ease", "ease_lambdas": ease.lambdas})
    final = selection.budgets[-1] if selection.budgets else 0
    rival = selection.chosen.name
    rival_score = max(selection.scores[rival].values(), default=float("-inf"))
    scores = {**selection.scores, "ease": {final: ease.best}}
    candidates = [*selection.candidates, candidate]
    if ease.best > rival_score:
        why = (
            f"EASE's validation NDCG@10 ({ease.best:.4f}, lambda {ease.best_lambda:g}) beats "
            f"{rival}'s ({rival_score:.4f}), the best of {len(selection.candidates)} iterative "
            f"candidates after {final} rounds of successive halving"
        )
        return Selection(
            candidates, selection.budgets, scores, candidate, why, report, curves=selection.curves
        )
    why = f"{selection.why}; EASE reached {ease.best:.4f} (lambda {ease.best_lambda:g})"
    return Selection(
        candidates,
        selection.budgets,
        scores,
        selection.chosen,
        why,
        report,
        curves=selection.curves,
    )


def _resolved(options: SimulationOptions) -> SimulationOptions:
    """Fill FedAvg's model-dependent default step when the recipe left it open."""
    if options.server_lr is None and options.server_optimizer == "fedavg":
        from fedrec.options import IALS_SERVER_LR

        lr = IALS_SERVER_LR if options.model == "ials" else 2.0
        return dataclasses.replace(options, server_lr=lr)
    return options
