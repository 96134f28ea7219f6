"""The default path of ``fedrec simulate`` for any partition, in one process (no HTTP).

``nice python -m bench.cross_device --data ../shared/datasets/ml-100k --partition per-user``
does what ``fedrec simulate --dataset ml-100k --partition per-user --seed 0`` does with
its defaults (``--shape NAME``: on one of :data:`bench.generalisation.SHAPES`, as
``fedrec simulate --dataset csv --data NAME.csv`` with its columns would; ``--max-users N``
keeps N of its users; ``--data-seed N`` draws another sample of the same kind of data, 0
being the data of every run before it), on the same arithmetic but without the
coordinator's HTTP, database and per-round waits
(:class:`fedrec.short_federation.ShortFederation`: the participants' trainers, the wire
codec, the coordinator's strategy): the recipe search on validation
(:func:`fedrec.selection.select_recipe`), the chosen federation trained until its
validation NDCG@10 stops improving (patience, cap), its best validated version deployed,
each participant's users fitted to train + validation against it
(:func:`participant_sdk.recsys.trainers.fold_in`), and the centralized baseline of
:mod:`fedrec.simulation` beside it. The test split is read once, at the end.

Over HTTP a cross-device round costs ~5 s for 943 participants on an idle 2-core
machine (bench/RESULTS.md, "crossdev-core" and the quiet-machine per-user rounds of
``bench.per_user_round``), far more on a loaded one, and a search and federation take
dozens of rounds: this script measures the quality of the default path where the full
command cannot run in the time at hand. It prints wall and CPU seconds per phase.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from bench.generalisation import SHAPES, csv_columns, load_shape
from bench.per_user_metrics import per_user_ndcg
from fedrec.early_stopping import EarlyStopping
from fedrec.options import SimulationOptions
from fedrec.partition import local_view, partition_users
from fedrec.selection import candidates_for, has_timestamps, select_recipe
from fedrec.short_federation import ShortFederation
from fedrec.simulation import iterative_baseline, read_test_split
from participant_sdk.recsys import (
    Interactions,
    PopularityModel,
    draw_sampled_negatives,
    evaluate_loo,
    evaluate_sampled,
    leave_one_out,
    load_movielens_100k,
)
from participant_sdk.recsys.splits import LeaveOneOutSplit, concat
from participant_sdk.recsys.trainers import fold_in, prepare_to_score

# each tested model's per-user test NDCG@10, in the order of split.test (for the paired
# standard error of the federated - centralized difference)
PER_USER: dict[str, npt.NDArray[np.float64]] = {}
# issue 9's bar for skewed and per-user partitions: federated test NDCG@10 >= BAR x central
BAR = 0.95


def _record(name: str, score: Any, split: LeaveOneOutSplit) -> None:

    PER_USER[name] = per_user_ndcg(score, concat(split.train, split.valid), split.test)


def paired_gap(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Mean of ``a - b`` over the same users, its standard error, and a bootstrap 95 %
    interval of ``mean(a) / mean(b)`` (2 000 resamples of users, seed 0)."""
    diff = a - b
    rng = np.random.default_rng(0)
    draws = rng.integers(0, a.size, size=(2000, a.size))
    ratios = a[draws].mean(axis=1) / b[draws].mean(axis=1)
    return {
        "difference": round(float(diff.mean()), 5),
        "se_of_difference": round(float(diff.std(ddof=1) / np.sqrt(diff.size)), 5),
        "ratio_95ci": [round(float(np.quantile(ratios, q)), 3) for q in (0.025, 0.975)],
    }


def _test(score: Any, split: LeaveOneOutSplit, data: Interactions) -> dict[str, float]:
    metrics = evaluate_loo(score, concat(split.train, split.valid), split.test)
    metrics.update(
        evaluate_sampled(score, split.test, draw_sampled_negatives(data, split.test.users))
    )
    return {k: float(v) for k, v in metrics.items()}


class _Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        found = {"wall_s": round(wall - self.wall, 1), "cpu_s": round(cpu - self.cpu, 1)}
        self.wall, self.cpu = wall, cpu
        return found


def federate(
    options: SimulationOptions,
    data: Interactions,
    split: LeaveOneOutSplit,
    groups: list[npt.NDArray[np.int64]],
    *,
    test: bool = True,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Train the chosen recipe with the stop policy; test its best validated version
    (``test=False``: only train, and return no test figures)."""
    federation = ShortFederation(
        split.train,
        groups,
        options.trainer_config(),
        options.strategy(),
        window=options.validation_window,
        min_delta=options.min_delta,
    )
    stopper = EarlyStopping(
        options.patience, options.min_delta, options.validation_window, options.min_rounds
    )
    # the versions the deploy policy may still choose (the best, and the newest window // 2)
    kept: dict[int, tuple[dict[str, Any], list[Any]]] = {}
    curve: list[float] = []
    for number in range(1, options.rounds + 1):
        federation.advance()
        value = federation.validate(split.valid)
        curve.append(round(value, 4))
        print(f"  round {number}: validation NDCG@10 {value:.4f}", flush=True)
        stopper.update(number, value)
        saved = [t.user_factors.copy() for _u, _l, t in federation.participants]
        kept[number] = ({k: v.copy() for k, v in federation.tensors.items()}, saved)
        kept = {step: version for step, version in kept.items() if step in stopper.keep()}
        if stopper.should_stop:
            break
    assert stopper.best_step is not None
    chosen = {
        "chosen_round": stopper.best_step,
        "validation_ndcg@10": stopper.best_value,
        "rounds_trained": len(curve),
        "validation_curve": curve,
    }
    if not test:
        return {}, chosen
    tensors, factors = kept[stopper.best_step]
    history = concat(split.train, split.valid)
    dim = tensors["item_factors"].shape[1]
    users_factors = np.zeros((split.train.num_users, dim), dtype=np.float32)
    for (users, local, trainer), saved_factors in zip(
        federation.participants, factors, strict=True
    ):
        trainer.user_factors = saved_factors
        prepare_to_score(trainer, tensors, local)
        fold_in(trainer, tensors, local_view(history, users))
        users_factors[users] = trainer.user_factors
    q, b = tensors["item_factors"], tensors["item_bias"]

    def score(users: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return np.asarray(users_factors[users] @ q.T + b[None, :], dtype=np.float32)

    _record("federated", score, split)
    return _test(score, split, data), chosen


def _override(item: str) -> tuple[str, Any]:
    """``FIELD=JSON`` of ``--set``: a SimulationOptions field and its value."""
    name, _, value = item.partition("=")
    if name not in {f.name for f in dataclasses.fields(SimulationOptions)}:
        raise SystemExit(f"--set {item}: {name!r} is no SimulationOptions field")
    return name, json.loads(value)


def load_data(args: argparse.Namespace, workdir: Path) -> tuple[Interactions, SimulationOptions]:
    """The data set (``--shape``, else ML-100K from ``--data``) and the default options
    `fedrec simulate` would start from for it (the CSV of a shape is written to
    ``workdir`` and read back with the same columns as the simulate command;
    ``args.data_seed``, 0 if absent, is the draw of :func:`bench.generalisation.load_shape`)."""
    options = SimulationOptions(
        dataset="ml-100k", partition=args.partition, participants=args.participants, seed=args.seed
    )
    if args.shape is None:
        data, _ = load_movielens_100k(args.data / "u.data")
        return data, options
    shape = SHAPES[args.shape]
    # bench.split_gap's arguments have no --data-seed: its data is draw 0
    data_seed = getattr(args, "data_seed", 0)
    found = load_shape(shape, workdir, max_users=args.max_users, data_seed=data_seed)
    if found is None:
        raise SystemExit(f"--shape {args.shape}: its data is not available here")
    data, csv_path = found
    columns = csv_columns(shape)
    return data, dataclasses.replace(
        options,
        dataset="csv",
        data=csv_path,
        user_col=columns["user_col"],
        item_col=columns["item_col"],
        rating_col=columns["rating_col"],
        time_col=columns["time_col"],
    )


def _central_validation(
    options: SimulationOptions, data: Interactions, split: LeaveOneOutSplit, clock: _Clock
) -> dict[str, Any]:
    """The centralized baseline's validation figure only: its test step is replaced by a
    no-op, so the test split is not read."""
    _, chosen = iterative_baseline(options, options.trainer_config(), data, split, test=None)
    print(f"centralized, validation only: {json.dumps({**chosen, **clock.lap()})}")
    return chosen


def summarise_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over training seeds of each run's figures (``runs[i]``: ``{"seed",
    "federated": {"validation_ndcg@10", "test": {"ndcg@10"}}, "centralized": {...}}``; a
    side or its test may be missing, as in ``--validation-only``), for ``validation`` and
    ``test``: each side's mean, and, when both sides are there, the mean of the per-seed
    ratios and of the per-seed differences with their standard errors over seeds
    (``sd / sqrt(n)``: the training seed as the randomness; ``None`` for one seed)."""

    def figure(run: dict[str, Any], side: str, read: str) -> float | None:
        found = run.get(side, {})
        value = found.get("validation_ndcg@10") if read == "validation" else None
        if read == "test":
            value = found.get("test", {}).get("ndcg@10")
        return None if value is None else float(value)

    def mean_se(values: list[float]) -> dict[str, float | None]:
        array = np.asarray(values, dtype=np.float64)
        se = float(array.std(ddof=1) / np.sqrt(array.size)) if array.size > 1 else None
        return {"mean": round(float(array.mean()), 5), "se": None if se is None else round(se, 5)}

    def with_interval(values: list[float]) -> dict[str, Any]:
        # the mean's 95 % interval on Student's t with n - 1 degrees of freedom
        found: dict[str, Any] = mean_se(values)
        if found["se"] is not None:
            half = float(stats.t.ppf(0.975, len(values) - 1)) * float(np.std(values, ddof=1))
            half /= float(np.sqrt(len(values)))
            found["t95"] = [round(found["mean"] - half, 4), round(found["mean"] + half, 4)]
        return found

    summary: dict[str, Any] = {"seeds": [run["seed"] for run in runs]}
    for read in ("validation", "test"):
        sides = {
            side: [figure(run, side, read) for run in runs] for side in ("federated", "centralized")
        }
        found: dict[str, Any] = {}
        for side, values in sides.items():
            if all(v is not None for v in values):
                found[side] = mean_se([v for v in values if v is not None])
        if {"federated", "centralized"} <= set(found):
            pairs = list(zip(sides["federated"], sides["centralized"], strict=True))
            ratios = [f / c for f, c in pairs if f is not None and c]
            found["ratio"] = with_interval(ratios)
            found["difference"] = with_interval(
                [f - c for f, c in pairs if f is not None and c is not None]
            )
            found["ratio_of_means"] = round(
                found["federated"]["mean"] / found["centralized"]["mean"], 4
            )
            # the bar of issue 9: federated >= BAR x central, seed by seed
            found["seeds_at_or_above_bar"] = sum(r >= BAR for r in ratios)
        if found:
            summary[read] = found
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    seeds = summary["seeds"]
    for read in ("validation", "test"):
        found = summary.get(read)
        if not found:
            continue
        parts = [
            f"{side} {found[side]['mean']:.4f} (s.e. {found[side]['se']})"
            for side in ("federated", "centralized")
            if side in found
        ]
        if "ratio" in found:
            ratio, difference = found["ratio"], found["difference"]
            parts.append(
                f"{ratio['mean']:.3f} x central (s.e. {ratio['se']}, t 95 % {ratio.get('t95')})"
            )
            parts.append(f"ratio of the means {found['ratio_of_means']:.3f}")
            parts.append(
                f"difference {difference['mean']:+.4f} (s.e. {difference['se']}, "
                f"t 95 % {difference.get('t95')})"
            )
            parts.append(f"{found['seeds_at_or_above_bar']} of {len(seeds)} seeds >= {BAR} x")
        print(f"mean over seeds {seeds}, {read} NDCG@10: " + ", ".join(parts), flush=True)
    if "paired" in summary:
        print(f"paired over users, seed-averaged test NDCG@10: {summary['paired']}", flush=True)


def combine_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """The runs of several ``--seeds`` JSON files (``{"runs": [...]}``, with or without
    their ``summary``; a finished or a stopped run), in seed order. Refuses a seed found
    twice: two files of the same seed are the same run or different code; and runs of
    different ``--data-seed`` draws (a run without one is of data seed 0): the summary is
    over training seeds on one draw of the data."""
    runs: dict[int, dict[str, Any]] = {}
    draws: set[int] = set()
    for path in paths:
        found = json.loads(path.read_text())
        if not isinstance(found, dict) or not isinstance(found.get("runs"), list):
            raise ValueError(f"{path}: not the JSON of a --seeds run (no 'runs' list)")
        for run in found["runs"]:
            seed = int(run["seed"])
            if seed in runs:
                raise ValueError(f"{path}: seed {seed} is already in another file")
            draws.add(int(run.get("data_seed", 0)))
            if len(draws) > 1:
                raise ValueError(f"{path}: runs of data seeds {sorted(draws)}: one draw at a time")
            runs[seed] = run
    return [runs[seed] for seed in sorted(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/ml-100k"))
    parser.add_argument("--partition", default="per-user", choices=["iid", "skewed", "per-user"])
    parser.add_argument("--participants", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        type=int,
        help="run the whole path (search, federation, baseline, test) under N training seeds, "
        "--seed, --seed + 1, ... (the data and its split do not change), print each and the "
        "means over seeds with their standard errors, validation and test (--json holds the "
        "seeds done so far after each one, the summary at the end)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--chosen",
        help="skip the search and train this candidate of fedrec.selection.candidates_for "
        "(the search is deterministic: reuse the choice of a run already made, and its "
        "min_rounds with --set min_rounds=N: without the search there is none)",
    )
    parser.add_argument(
        "--sum-step",
        type=float,
        help="with --chosen bpr+fedavg-sum: its fraction of the sum of the deltas "
        "(fedrec.selection.SUM_STEP otherwise), to compare steps on validation",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="after the choice, override one SimulationOptions field (e.g. patience=10, "
        'server_optimizer="fedavgm"), to compare variants on validation; repeatable',
    )
    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        help="a synthetic (or derived) data set of bench.generalisation instead of --data's "
        "ML-100K, loaded from its CSV as `fedrec simulate --dataset csv` loads it",
    )
    parser.add_argument(
        "--max-users",
        type=int,
        help="with --shape: keep this many of its users (drawn with --data-seed), all "
        "their interactions",
    )
    parser.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="with --shape: another draw of the same kind of data. Seeds the synthetic "
        "shape's generator (new items, tastes, users) and the --max-users draw; the ML-100K "
        "shapes only redraw their users. 0 (the default) is the data of every earlier run; "
        "--seed / --seeds stay the training seeds",
    )
    parser.add_argument(
        "--validation-only",
        action="store_true",
        help="train the federation and print its validation curve; no centralized run, no test",
    )
    parser.add_argument(
        "--central-only",
        action="store_true",
        help="with --validation-only: train only the centralized baseline (same recipe and "
        "stop rule) and print its best smoothed validation NDCG@10, the reference of the "
        "federated curves; no test",
    )
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="train nothing: summarise over seeds the runs of these --seeds JSON files (same "
        "data, split and code; e.g. one seed range per process), print it and with --json "
        "write it with the runs (no per-user paired gap: the files do not hold per-user "
        "figures)",
    )
    args = parser.parse_args()
    if args.combine:
        combined = combine_runs(args.combine)
        summary = summarise_seeds(combined)
        _print_summary(summary)
        if args.json:
            args.json.write_text(json.dumps({"summary": summary, "runs": combined}, indent=2))
        return
    if args.max_users is not None and (args.shape is None or args.max_users < 3):
        parser.error("--max-users needs --shape and at least 3 users")
    if args.data_seed != 0 and args.shape is None:
        parser.error("--data-seed needs --shape (ML-100K from --data is one fixed data set)")
    if args.seeds is not None and args.seeds < 2:
        parser.error("--seeds needs at least 2 seeds (one seed is --seed)")
    clock = _Clock()
    with tempfile.TemporaryDirectory(prefix="fedrec-cross-device-") as workdir:
        data, options = load_data(args, Path(workdir))
    print(
        f"{args.shape or 'ml-100k'}: {data.num_users} users, {data.num_items} items, "
        f"{len(data)} interactions",
        flush=True,
    )
    split = leave_one_out(data)
    if args.seeds is None:
        found = run_seed(args, options, data, split, clock)
        if args.json:
            indent = None if args.validation_only else 2
            args.json.write_text(json.dumps(found, indent=indent, default=str))
        return
    runs: list[dict[str, Any]] = []
    per_user: list[dict[str, npt.NDArray[np.float64]]] = []
    for seed in range(args.seed, args.seed + args.seeds):
        print(f"seed {seed}:", flush=True)
        found = run_seed(args, dataclasses.replace(options, seed=seed), data, split, clock)
        runs.append({"seed": seed, **found})
        per_user.append(dict(PER_USER))
        PER_USER.clear()
        if args.json:  # the seeds done so far survive a run stopped before its summary
            args.json.write_text(json.dumps({"runs": runs}, indent=2, default=str))
    summary = summarise_seeds(runs)
    if all({"federated", "centralized"} <= set(users) for users in per_user):
        summary["paired"] = paired_gap(
            np.mean([users["federated"] for users in per_user], axis=0),
            np.mean([users["centralized"] for users in per_user], axis=0),
        )
    _print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2, default=str))


def run_seed(
    args: argparse.Namespace,
    options: SimulationOptions,
    data: Interactions,
    split: LeaveOneOutSplit,
    clock: _Clock,
) -> dict[str, Any]:
    """One run of the path under ``options.seed``: the search (or ``--chosen``), the
    federation, and unless ``--validation-only`` the baseline and the test; prints its
    figures and returns them (``federated`` / ``centralized``: their chosen round,
    validation figure and, when read, ``test``)."""
    groups = partition_users(data, args.partition, args.participants, seed=options.seed)
    report: dict[str, Any]
    if args.chosen:
        sizes = [users.size for users in groups]
        candidates = candidates_for(
            options,
            timestamps=has_timestamps(split.train),
            users_per_participant=float(np.median(sizes)),
            participants=len(groups),
        )
        (candidate,) = [c for c in candidates if c.name == args.chosen]
        if args.sum_step is not None and candidate.name == "bpr+fedavg-sum":
            step = round(args.sum_step * len(groups), 6)
            candidate = dataclasses.replace(
                candidate, settings={**candidate.settings, "server_lr": step}
            )
        options = candidate.apply(options)
        report = {
            "chosen": candidate.name,
            "settings": candidate.settings,
            "why": "--chosen (search not rerun)",
        }
    else:
        options, selection = select_recipe(options, split.train, split.valid, groups, log=print)
        report = selection.report()
    overrides = dict(_override(item) for item in args.set)
    if overrides:
        options = dataclasses.replace(options, **overrides)
        report["overrides"] = overrides
    if options.model == "ease":  # per user its B download guard leaves EASE out
        raise SystemExit(
            f"the search chose EASE ({report['why']}): federated EASE equals centralized EASE by "
            "construction, and this script trains iterative models only"
        )
    searched = clock.lap()
    print(f"chose {report['chosen']}: {report['why']} ({searched})", flush=True)
    if args.validation_only and args.central_only:
        central_chosen = _central_validation(options, data, split, clock)
        return {"selection": report, "centralized": central_chosen}
    federated, fed_chosen = federate(options, data, split, groups, test=not args.validation_only)
    trained = clock.lap()
    if args.validation_only:
        print(f"validation only: {json.dumps({**fed_chosen, **trained})}")
        return {"selection": report, **fed_chosen, "federated": {**fed_chosen, **trained}}

    def recorded(score_fn: Any, split: LeaveOneOutSplit, full: Interactions) -> dict[str, float]:
        _record("centralized", score_fn, split)  # the baseline's per-user figures, read once
        return read_test_split(score_fn, split, full)

    config = options.trainer_config()
    central, central_chosen = iterative_baseline(options, config, data, split, test=recorded)
    centralized = clock.lap()
    popularity = _test(PopularityModel(split.train).score, split, data)
    found = {
        "data": args.shape or "ml-100k",
        "data_seed": args.data_seed,
        "size": {"users": data.num_users, "items": data.num_items, "interactions": len(data)},
        "partition": args.partition,
        "participants": len(groups),
        "selection": report,
        "chosen_options": {
            k: v for k, v in dataclasses.asdict(options).items() if not isinstance(v, Path)
        },
        "federated": {"test": federated, **fed_chosen, **trained},
        "centralized": {"test": central, **central_chosen, **centralized},
        "popularity": {"test": popularity},
        "search": searched,
        "ratio": federated["ndcg@10"] / central["ndcg@10"],
        "paired": paired_gap(PER_USER["federated"], PER_USER["centralized"]),
    }
    print(
        f"test NDCG@10: federated {federated['ndcg@10']:.4f}, centralized "
        f"{central['ndcg@10']:.4f} ({found['ratio']:.3f} x), popularity "
        f"{popularity['ndcg@10']:.4f}; search {searched}, federation {trained}, "
        f"centralized {centralized}; paired {found['paired']}"
    )
    return found


if __name__ == "__main__":
    main()
