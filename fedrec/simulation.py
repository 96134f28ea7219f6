"""``fedrec simulate`` / ``fedrec demo``: a whole federation on one machine, over HTTP.

An embedded coordinator (:func:`fedrec.local_server.embedded_coordinator`: real
uvicorn on 127.0.0.1, SQLite in a temporary or given folder), or a running one, and N
participants that each hold one slice of a dataset's users and run
:class:`participant_sdk.FederatedRecommender` against it. At the end the
federated test figures are set beside the same model trained centrally on the pooled
data with the same budget, and beside popularity.

Evaluation follows EVALUATION.md (leave-one-out, full ranking, 99 sampled negatives),
with one stated deviation: the shared item model is not retrained on train + validation
before the test (the federation trains it on ``Tr_u`` and deploys its best validated
version, so the centralized run does the same); only the users' own part is refitted to
``Tr_u ∪ {v_u}``, by each participant as a deployed model would (implicit ALS and EASE
exactly, BPR one user-only local round: ``participant_sdk.recsys.trainers.fold_in``), and
by the centralized run alike. Both stop on the same validation split with the
same patience: the federation by its stop policy, the centralized run round by round
(a round = the same local epochs), and each keeps its best validated model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coordinator.domain.backoff import plateau_scale
from coordinator.domain.specs import EASE_DEFAULT_LAMBDAS
from coordinator.domain.validation_curve import smoothed
from fedrec.datasets import DatasetUnavailable, fetch_movielens_100k, find_movielens_100k
from fedrec.early_stopping import EarlyStopping
from fedrec.ease_search import ease_top_k_for, pooled_ease_model
from fedrec.failures import SimulationError
from fedrec.local_server import embedded_coordinator
from fedrec.options import SimulationOptions
from fedrec.partition import local_view, partition_users
from fedrec.selection import select_recipe
from fedrec.synthetic import make_synthetic
from participant_sdk import (
    Client,
    FederatedRecommender,
    NoUpdatesError,
    RoundNotOpenError,
    keep_alive_transport,
)
from participant_sdk.recsys import (
    BPRConfig,
    DataFileError,
    IALSConfig,
    Interactions,
    PopularityModel,
    draw_sampled_negatives,
    evaluate_loo,
    evaluate_sampled,
    init_item_tensors,
    leave_one_out,
    leave_one_out_keys,
    load_csv,
    load_movielens_100k,
)
from participant_sdk.recsys.ease_trainer import EASEConfig, EASETrainer
from participant_sdk.recsys.splits import LeaveOneOutSplit, concat
from participant_sdk.recsys.trainers import Trainer, fold_in, make_trainer, prepare_to_score

__all__ = ["SimulationOptions", "load_dataset", "run_simulation"]

log = logging.getLogger("fedrec.simulate")
METRIC_KEYS = ("ndcg@10", "hr@10", "precision@10", "recall@10", "sampled_ndcg@10", "sampled_hr@10")
# the participants are in this process: their final reports take seconds
FINAL_EVALUATION_SECONDS = 120.0
METRIC_LABELS = ("NDCG@10", "HR@10", "P@10", "R@10", "NDCG@10 s99", "HR@10 s99")


# ---------------------------------------------------------------------------- data
def load_dataset(options: SimulationOptions, console: Console) -> tuple[str, Interactions]:
    """Load the chosen dataset; the demo falls back to synthetic data, saying so."""
    if options.dataset == "synthetic":
        return "synthetic", make_synthetic(seed=options.seed)
    if options.dataset == "csv":
        if options.data is None:
            raise SystemExit("--dataset csv needs --data PATH")
        try:
            data, report = load_csv(
                options.data,
                user_col=options.user_col,
                item_col=options.item_col,
                rating_col=options.rating_col,
                time_col=options.time_col,
            )
        except DataFileError as exc:  # no such columns, no rows, undecodable: names the file
            raise SimulationError(f"cannot load {exc}") from exc
        if report.malformed:
            console.print(f"[yellow]dropped {report.malformed} malformed rows: {report.dropped}")
        return options.data.name, data
    try:
        folder = (
            find_movielens_100k(options.data)
            if options.data is not None
            else fetch_movielens_100k()
        )
    except DatasetUnavailable as exc:
        if not options.fallback_to_synthetic:
            raise SystemExit(str(exc)) from exc
        console.print(
            f"[yellow]MovieLens 100K is not available here ({exc}).\n"
            "Running on the built-in synthetic data set instead (planted low-rank preferences "
            "with popularity skew); pass --data /path/to/ml-100k to use MovieLens."
        )
        return "synthetic", make_synthetic(seed=options.seed)
    data, _report = load_movielens_100k(folder / "u.data")
    return "ml-100k", data


# ---------------------------------------------------------------------------- evaluation
# scores a model's users (score_fn) on the test split of split; full is the whole data set
TestStep = Callable[[Any, LeaveOneOutSplit, Interactions], dict[str, float]]


def read_test_split(score_fn: Any, split: LeaveOneOutSplit, full: Interactions) -> dict[str, float]:
    """The one read of the test split: full ranking and 99 sampled negatives."""
    metrics = evaluate_loo(score_fn, concat(split.train, split.valid), split.test)
    negatives = draw_sampled_negatives(full, split.test.users)
    metrics.update(evaluate_sampled(score_fn, split.test, negatives))
    return metrics


def _scorer(trainer: Trainer, tensors: dict[str, Any]) -> Any:
    return lambda users: trainer.score(users, tensors)


def centralized_baseline(
    data: Interactions,
    split: LeaveOneOutSplit,
    config: BPRConfig | IALSConfig,
    rounds: int,
    *,
    patience: int | None = None,
    min_delta: float = 0.0,
    window: int = 1,
    min_rounds: int | None = None,
    plateau_decay: float | None = None,
    plateau_patience: int = 5,
    test: TestStep | None = read_test_split,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The same model on the pooled training data, stopped as the federation is.

    Each round trains the federation's local epochs (or ALS sweeps) and is evaluated on
    validation; training stops after ``patience`` rounds without a gain above
    ``min_delta`` (or at ``rounds``), but not before ``min_rounds``, and the best
    validated model is tested, both on the validation curve smoothed over ``window``
    rounds (the deploy policy's). With
    ``plateau_decay``, BPR's learning rate decays on the plateaus of that curve as the
    federation's server step does (:func:`coordinator.domain.backoff.plateau_scale`). Returns
    the test metrics (``test``'s; empty with ``test=None``, which never reads the test split)
    and which round was chosen and why training stopped.
    """
    if isinstance(config, BPRConfig) and config.user_epochs:
        # the user refresh is a device's remedy for user factors that lag the server's item
        # step; central SGD trains users and items in one pass, and extra user epochs only
        # overfit them there (sparse per user: validation 0.1187 with 8, 0.1298 without)
        config = config.replace(user_epochs=0)
    trainer = make_trainer(config, num_users=data.num_users, num_items=data.num_items)
    tensors = init_item_tensors(data.num_items, config.dim, seed=config.seed, scale=0.01)
    stopper = EarlyStopping(patience, min_delta, window, min_rounds)
    # the models the stop policy may still deploy (the best, and the newest window // 2)
    kept: dict[int, tuple[dict[str, Any], np.ndarray]] = {}
    trained = 0
    scale = 1.0
    for number in range(1, rounds + 1):
        if isinstance(config, BPRConfig):
            if plateau_decay is not None:
                scale = plateau_scale(
                    scale,
                    smoothed(stopper.values, window),
                    factor=plateau_decay,
                    patience=plateau_patience,
                    min_delta=min_delta,
                )
            # the devices' round schedule (round_decay), round for round
            update = trainer.train_round(
                tensors, split.train, learning_rate=config.round_learning_rate(number) * scale
            )
        else:
            update = trainer.train_round(tensors, split.train)
        tensors = {"item_factors": update.item_factors, "item_bias": update.item_bias}
        prepare_to_score(trainer, tensors, split.train)
        valid = evaluate_loo(_scorer(trainer, tensors), split.train, split.valid)
        trained = number
        stopper.update(number, valid["ndcg@10"])
        kept[number] = (tensors, trainer.user_factors.copy())
        kept = {step: model for step, model in kept.items() if step in stopper.keep()}
        if stopper.should_stop:
            break
    assert stopper.best_step is not None
    # deploy the best validated model, as the federation's policy does, and fit the users
    # to their whole history as the participants do before the test
    tensors, user_factors = kept[stopper.best_step]
    trainer.user_factors = user_factors
    fold_in(trainer, tensors, concat(split.train, split.valid))
    chosen = {
        "chosen_round": stopper.best_step,
        "validation_ndcg@10": stopper.best_value,
        "rounds_trained": trained,
        "stopped_by": _stop_cause(stopper.should_stop, patience, min_delta, rounds),
    }
    if test is None:
        return {}, chosen
    return test(_scorer(trainer, tensors), split, data), chosen


def central_ease(
    data: Interactions,
    split: LeaveOneOutSplit,
    lambdas: tuple[float, ...],
    top_k: int | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Centralized EASE on the pooled training data, its lambda chosen on validation
    among the federation's candidates. The solve is the coordinator's own function on
    the same Gram (pruned alike: ``top_k`` is the federation's ``ease_top_k``), so
    federated equals centralized."""
    scorer = EASETrainer(num_users=data.num_users, num_items=data.num_items, config=EASEConfig())
    best: tuple[float, int, dict[str, np.ndarray]] | None = None
    for index, lam in enumerate(lambdas, start=1):
        tensors = pooled_ease_model(split.train, lam, top_k)
        fold_in(scorer, tensors, split.train)
        valid = _ease_validation(scorer, tensors, split)
        if best is None or valid > best[0]:
            best = (valid, index, tensors)
        del tensors
    assert best is not None
    # the participants' scoring: float32 B, each user's train + validation rows
    ease_b = best[2]
    fold_in(scorer, ease_b, concat(split.train, split.valid))
    chosen = {
        "chosen_round": best[1],
        "validation_ndcg@10": best[0],
        "rounds_trained": len(lambdas),
        "stopped_by": f"lambda grid {list(lambdas)} (one solve each)",
        "ease_lambda": lambdas[best[1] - 1],
        "ease_top_k": top_k,
    }
    return read_test_split(lambda users: scorer.score(users, ease_b), split, data), chosen


def _ease_validation(
    scorer: EASETrainer, tensors: dict[str, np.ndarray], split: LeaveOneOutSplit
) -> float:
    return float(
        evaluate_loo(lambda users: scorer.score(users, tensors), split.train, split.valid)[
            "ndcg@10"
        ]
    )


def _stop_cause(early: bool, patience: int | None, min_delta: float, cap: int) -> str:
    if early:
        return f"patience: {patience} rounds without a validation gain above {min_delta:g}"
    return f"round cap ({cap})"


# ---------------------------------------------------------------------------- the run
def run_simulation(options: SimulationOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the whole simulation; print progress and the final table; return the report."""
    console = console or Console()
    options = _ease_rounds(options)
    options.strategy()  # refuse settings the coordinator would refuse, before any work
    options.round_policy()
    privacy = options.privacy()
    name, data = load_dataset(options, console)
    split = leave_one_out(data)
    groups = partition_users(data, options.partition, options.participants, seed=options.seed)
    if options.secure_aggregation:
        # the threshold defaults to a majority of the participants, known only now
        privacy = options.privacy(participants=len(groups))
    console.print(
        f"[bold]{name}[/]: {data.num_users} users, {data.num_items} items, "
        f"{len(data)} interactions; {len(groups)} participants ({options.partition}), "
        f"up to {options.rounds} rounds"
        + (
            f", stopping after {options.patience} without a validation gain"
            if options.patience
            else ""
        )
    )
    selection = None
    if options.recipe == "auto" and options.model != "ease":
        options, selection = _choose_recipe(options, split, groups, privacy, console)
        options = _ease_rounds(options)
    config = EASEConfig() if options.model == "ease" else options.trainer_config()
    console.print(_model_line(config, options))
    top_k = ease_top_k_for(data.num_items)  # decided once: the baseline and the spec agree
    if isinstance(config, EASEConfig) and top_k is not None:
        console.print(f"EASE's B ships pruned to {top_k} weights per column")
    if options.encoding != "float32":
        console.print(f"transport: updates and downloads in {options.encoding}")
    if privacy is not None and "secure_aggregation" in privacy:
        console.print(_secure_aggregation_line(privacy["secure_aggregation"], len(groups)))
    with contextlib.ExitStack() as stack:
        # The centralized baseline needs nothing from the federation: it trains in a
        # second process meanwhile. The federation (participants and the embedded
        # coordinator) holds one interpreter's lock, so on 2 cores this takes the
        # baseline off the wall time; the pool's exit ends it if the federation fails.
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(1))
        central = pool.apply_async(_centralized, (options, config, data, split, top_k))
        if options.coordinator:
            url, token = options.coordinator, options.admin_token or ""
            if not token:
                raise SystemExit("--coordinator needs --admin-token (or FEDREC_ADMIN_TOKEN)")
        else:
            data_dir = options.data_dir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="fedrec-sim-"))
            )
            url, token = stack.enter_context(embedded_coordinator(data_dir))
            console.print(f"embedded coordinator at {url} (data in {data_dir})")
        admin = stack.enter_context(Client(url, token))
        history, federated, federated_chosen, spent = _federate(
            options, config, data, groups, admin, url, console, privacy, top_k
        )
        centralized, central_chosen, central_seconds = central.get()
    popular = PopularityModel(split.train)
    popularity = read_test_split(popular.score, split, data)
    final = {
        "federated": {"test": federated, **federated_chosen},
        "centralized": {
            "test": centralized,
            "seconds": round(central_seconds, 2),
            **central_chosen,
        },
        "popularity": {"test": popularity},
    }
    _print_table(console, final)
    for model in ("federated", "centralized"):
        entry = final[model]
        valid = entry["validation_ndcg@10"]
        console.print(
            f"{model}: round {entry['chosen_round']} chosen of {entry['rounds_trained']} "
            f"(validation NDCG@10 {valid if valid is None else f'{valid:.4f}'}); "
            f"stopped by {entry['stopped_by']}"
        )
    if spent is not None:
        final["privacy_spent"] = spent
        console.print(_privacy_line(options, spent))
    report = {
        "dataset": name,
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(options).items()
            if k not in ("admin_token",)
        },
        "protocol": "EVALUATION.md v1, leave-one-out; no retrain on train+validation "
        "(both keep their best validated model, early-stopped on the validation split)",
        "history": history,
        "final": final,
    }
    if selection is not None:
        report["selection"] = selection
    if options.report:
        options.report.write_text(json.dumps(report, indent=2, default=str))
        console.print(f"report written to {options.report}")
    return report


def _centralized(
    options: SimulationOptions,
    config: BPRConfig | IALSConfig | EASEConfig,
    data: Interactions,
    split: LeaveOneOutSplit,
    ease_top_k: int | None,
) -> tuple[dict[str, float], dict[str, Any], float]:
    """The centralized baseline of the chosen model, and its seconds (run in the pool)."""
    started = time.perf_counter()
    if isinstance(config, EASEConfig):
        centralized, chosen = central_ease(data, split, _lambdas(options), ease_top_k)
    else:
        centralized, chosen = iterative_baseline(options, config, data, split)
    return centralized, chosen, time.perf_counter() - started


def iterative_baseline(
    options: SimulationOptions,
    config: BPRConfig | IALSConfig,
    data: Interactions,
    split: LeaveOneOutSplit,
    *,
    test: TestStep | None = read_test_split,
) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`centralized_baseline` of an iterative model, stopped by the federation's rule."""
    return centralized_baseline(
        data,
        split,
        config.replace(epochs=options.local_epochs) if isinstance(config, BPRConfig) else config,
        options.rounds,
        patience=options.patience,
        min_delta=options.min_delta,
        window=options.validation_window,
        # the federation's floor under patience, search-derived or the user's: one stop rule
        # for both (it can only lengthen the baseline's run, whose best validated round is
        # still the one tested)
        min_rounds=options.min_rounds,
        plateau_decay=options.plateau_decay,
        plateau_patience=options.plateau_patience,
        test=test,
    )


def _lambdas(options: SimulationOptions) -> tuple[float, ...]:
    return options.ease_lambdas or EASE_DEFAULT_LAMBDAS


def _ease_rounds(options: SimulationOptions) -> SimulationOptions:
    """EASE trains one round per candidate lambda, then stops (no patience)."""
    if options.model != "ease":
        return options
    return dataclasses.replace(options, rounds=len(_lambdas(options)), patience=None)


def _choose_recipe(
    options: SimulationOptions,
    split: LeaveOneOutSplit,
    groups: list[np.ndarray],
    privacy: dict[str, Any] | None,
    console: Console,
) -> tuple[SimulationOptions, dict[str, Any] | None]:
    """The recipe search on the training and validation splits (never the test)."""
    if privacy is not None:
        # the search's short federations would spend privacy budget the report omits
        console.print(
            "recipe: as given (no search with differential privacy or secure aggregation)"
        )
        return options, None
    started = time.perf_counter()
    console.print("choosing the recipe on the validation split (successive halving)")
    chosen, selection = select_recipe(
        options, split.train, split.valid, groups, log=lambda m: console.print(f"  {m}")
    )
    report = selection.report()
    report["seconds"] = round(time.perf_counter() - started, 1)
    console.print(
        f"recipe: {selection.chosen.name} {selection.chosen.settings} — {selection.why} "
        f"({report['seconds']} s)"
    )
    return chosen, report


def _model_line(config: BPRConfig | IALSConfig | EASEConfig, options: SimulationOptions) -> str:
    if isinstance(config, EASEConfig):
        return f"model: EASE, lambda chosen on validation among {list(_lambdas(options))}"
    if isinstance(config, IALSConfig):
        return (
            f"model: implicit ALS, {config.dim} factors, reg {config.reg:g}, confidence "
            f"1 + {config.alpha:g}·log1p(strength), {config.epochs} local sweep(s) per round"
        )
    recency = (
        f", each user's {config.recency_window} latest interactions sampled "
        f"{config.recency_weight:g}x as often"
        if config.recency_weighted
        else ""
    )
    refresh = (
        f", each device's user refitted for {config.user_epochs} epoch(s) first"
        if config.user_epochs
        else ""
    )
    return (
        f"model: BPR-MF, {config.dim} factors, lr {config.learning_rate:g}, "
        f"{config.negatives} negatives per positive, {config.epochs} local epochs{recency}"
        f"{refresh}"
    )


def _federate(
    options: SimulationOptions,
    config: BPRConfig | IALSConfig | EASEConfig,
    data: Interactions,
    groups: list[np.ndarray],
    admin: Client,
    url: str,
    console: Console,
    privacy: dict[str, Any] | None,
    ease_top_k: int | None,
) -> tuple[list[dict[str, Any]], dict[str, float], dict[str, Any], dict[str, Any] | None]:
    federation = admin.federations.create(
        f"simulation-{options.partition}",
        {
            "kind": "ease",
            "num_items": data.num_items,
            "ease_lambdas": _lambdas(options),
            "ease_top_k": ease_top_k,
        }
        if isinstance(config, EASEConfig)
        else {
            "kind": "ials" if options.model == "ials" else "mf",
            "num_items": data.num_items,
            "dim": config.dim,
            "seed": options.seed,
            "init_scale": 0.01,
        },
        strategy=options.strategy(),
        rounds={**options.round_policy(), "final_evaluation_seconds": FINAL_EVALUATION_SECONDS},
        catalog=data.item_ids,
        deploy=options.deploy_policy(),
        privacy=privacy,
        transport={"encoding": options.encoding} if options.encoding != "float32" else None,
    )
    fid = federation.id
    clients: list[Client] = []
    participants: list[FederatedRecommender] = []
    keyed = _with_split_keys(data, config)
    stack = contextlib.ExitStack()
    try:
        for index, users in enumerate(groups):
            token = admin.participants.enrol(fid, f"participant-{index}").token
            # loopback to the embedded coordinator: the cheap keep-alive transport
            client = Client(url, token, transport=keep_alive_transport())
            clients.append(client)
            participants.append(
                FederatedRecommender(client, fid, local_view(keyed, users), config=config)
            )
        history: list[dict[str, Any]] = []
        # secure aggregation: each phase waits for every participant, so all step at once
        workers = len(participants) if options.secure_aggregation else options.workers
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, workers)))
        with Progress(
            TextColumn("[bold]round {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("rounds", total=options.rounds, status="")
            for round_number in range(1, options.rounds + 1):
                started = time.perf_counter()
                # participants are independent: step them side by side, as real ones would
                outcomes = list(pool.map(lambda p: p.step(), participants))
                if "completed" in outcomes:
                    break
                _check_divergence(round_number, outcomes, participants, console)
                # a participant without training data uploads nothing: close the round anyway
                with contextlib.suppress(RoundNotOpenError, NoUpdatesError):
                    if admin.rounds.get(fid, round_number).state == "open":
                        admin.rounds.aggregate(fid, round_number)
                admin.rounds.wait_for_next(fid, after=round_number, timeout=600)
                seconds = time.perf_counter() - started
                entry = _round_entry(admin, fid, round_number, seconds)
                history.append(entry)
                valid = entry.get("validation_of_base", {})
                progress.update(
                    task,
                    advance=1,
                    status=f"base v{entry['base_version']} valid ndcg@10 "
                    f"{valid.get('ndcg@10', float('nan')):.4f}  {seconds:.1f}s",
                )
                if admin.federations.get(fid).state != "active":
                    break
        _final_evaluation(admin, fid, participants, pool)
        results = [p.finish() for p in participants]
        deployed = admin.deployment.get(fid).version
        test_rows = [r for r in admin.metrics(fid) if r.split == "test" and r.version == deployed]
        federated = dict(test_rows[0].metrics) if test_rows else {}
        federated["deployed_version"] = deployed
        console.print(
            f"deployed version {deployed}; {len(results)} participants reported test figures"
        )
        privacy_spent = admin.federations.get(fid).privacy_spent
        spent = privacy_spent.model_dump() if privacy_spent is not None else None
        return history, federated, _federated_choice(admin, fid, deployed, options), spent
    finally:
        stack.close()
        for client in clients:
            client.close()


def _with_split_keys(data: Interactions, config: Any) -> Interactions:
    """Undated data with the protocol's split keys as timestamps, for the participants.

    Without timestamps the leave-one-out keys are random draws over the whole data set,
    so a participant splitting its own users would hold out other items than the
    search, the centralized baseline and the protocol do: federated and centralized
    figures would come from different test items. With the keys as timestamps every
    participant reproduces the global split. Not when BPR weighs recency (a recipe the
    user pinned on undated data): random keys would pose as recency there.
    """
    if not len(data) or not bool(np.isnan(data.timestamps).all()):
        return data
    if isinstance(config, BPRConfig) and config.recency_window > 0:
        return data
    return dataclasses.replace(data, timestamps=leave_one_out_keys(data))


def _check_divergence(
    round_number: int,
    outcomes: list[str],
    participants: list[FederatedRecommender],
    console: Console,
) -> None:
    """Say which participants skipped the round; stop if nobody could upload."""
    diverged = [
        (index, p.last_divergence)
        for index, (p, outcome) in enumerate(zip(participants, outcomes, strict=True))
        if outcome == "diverged"
    ]
    if not diverged:
        return
    index, first = diverged[0]
    if "uploaded" not in outcomes and first is not None:
        # nothing to aggregate, and the same base would diverge again: stop here
        tried = ", ".join(f"{lr:g}" for lr in first.learning_rates)
        raise SimulationError(
            f"local training diverged on every participant in round {round_number} "
            f"(participant-{index}: tensor {first.tensor!r} has {first.problem} at learning "
            f"rates {tried}); nothing was uploaded. Lower --lr."
        )
    names = ", ".join(f"participant-{index}" for index, _ in diverged)
    console.print(f"[yellow]round {round_number}: {names} skipped the round: {first}")


def _final_evaluation(
    admin: Client, fid: str, participants: list[FederatedRecommender], pool: ThreadPoolExecutor
) -> None:
    """Training stopped: every participant reports the final version on validation, which
    completes the federation (a participant without validation users leaves it to the
    coordinator's final-evaluation timeout)."""
    deadline = time.monotonic() + FINAL_EVALUATION_SECONDS + 30
    while admin.federations.get(fid).state == "evaluating" and time.monotonic() < deadline:
        list(pool.map(lambda p: p.step(), participants))
        if admin.federations.get(fid).state == "evaluating":
            time.sleep(1.0)


def _federated_choice(
    admin: Client, fid: str, deployed: int, options: SimulationOptions
) -> dict[str, Any]:
    """Which version the federation deployed, after how many rounds, and why it stopped."""
    rows = {r.version: r for r in admin.metrics(fid) if r.split == "validation"}
    chosen = rows.get(deployed)
    closed = sum(r.state == "closed" for r in admin.rounds.list(fid))
    early = closed < options.rounds and options.patience is not None
    found = {
        "chosen_round": chosen.round if chosen else None,
        "validation_ndcg@10": chosen.metrics.get("ndcg@10") if chosen else None,
        "rounds_trained": closed,
        "stopped_by": _stop_cause(early, options.patience, options.min_delta, options.rounds),
    }
    if options.model == "ease" and 1 <= deployed <= options.rounds:
        found["ease_lambda"] = _lambdas(options)[deployed - 1]  # version r holds lambda r
    return found


def _round_entry(admin: Client, fid: str, number: int, seconds: float) -> dict[str, Any]:
    round_info = admin.rounds.get(fid, number)
    rows = {(r.version, r.split): r for r in admin.metrics(fid)}
    valid = rows.get((round_info.base_version, "validation"))
    return {
        "round": number,
        "state": round_info.state,
        "base_version": round_info.base_version,
        "result_version": round_info.result_version,
        "updates": round_info.update_count,
        "seconds": round(seconds, 3),
        "validation_of_base": dict(valid.metrics) if valid else {},
    }


def _secure_aggregation_line(policy: dict[str, Any], participants: int) -> str:
    graph = policy.get("graph", "complete")
    shape = (
        f"a random Harary graph of degree {policy.get('degree', '2*ceil(log2 n)')}"
        if graph == "harary"
        else "the complete graph"
    )
    return (
        f"secure aggregation: the coordinator sees only each round's sum of {participants} "
        f"participants (threshold {policy['threshold']}, clip {policy['clip_norm']:g}, keys "
        f"shared on {shape})"
    )


def _privacy_line(options: SimulationOptions, spent: dict[str, Any]) -> str:
    epsilon = spent.get("epsilon")
    shown = (
        f"epsilon {epsilon:.3g} at delta {spent['delta']:g}"
        if epsilon is not None
        else "epsilon unbounded (no noise: clipping only)"
    )
    return (
        f"differential privacy (one participant = the privacy unit; clip {options.dp_clip:g}, "
        f"noise multiplier {options.dp_noise:g}): {shown} after {spent['rounds']} rounds"
    )


def _print_table(console: Console, final: dict[str, Any]) -> None:
    table = Table(title="test metrics (leave-one-out; full ranking and 99 sampled negatives)")
    table.add_column("model", no_wrap=True)
    for label in METRIC_LABELS:
        table.add_column(label, justify="right", no_wrap=True)
    for model in ("federated", "centralized", "popularity"):
        metrics = final[model]["test"]
        table.add_row(model, *(f"{metrics.get(k, float('nan')):.4f}" for k in METRIC_KEYS))
    console.print(table)
