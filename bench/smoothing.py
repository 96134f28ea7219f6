"""Stop and deploy on a smoothed validation curve; decay the step on plateaus (issue 9).

``nice python -m bench.smoothing --partition per-user [--windows 1,3,5] [--decay 0.5:5]``
trains the default path's chosen recipe (``--chosen``, as :mod:`bench.cross_device`)
to a round cap without stopping, and the centralized baseline beside it, keeping every
round's model and every validation user's NDCG@10. The rounds do not depend on the stop
rule, so each rule's run is a prefix of this one: for each smoothing window it replays
the stop policy (patience on the smoothed curve) and the deploy policy (best smoothed
version) exactly as :mod:`coordinator.domain.validation_curve` applies them.

Which rule picks better versions is judged on validation only, by split halves: the
validation users are split at random into A and B (``--halves`` draws); each rule stops
and chooses on A's curve, and is scored by B's NDCG@10 of the version it chose (A and B
are disjoint users, so B's figure is not biased by the choice). The test split is read
only for the windows given by ``--test`` (the deployed version of each, federated and
centralized, fitted to train + validation as the product does).

``--decay FACTOR:PATIENCE`` multiplies the server step by FACTOR each time the smoothed
curve of the first window has not improved for PATIENCE rounds (the federation's
``plateau_decay``); the centralized baseline's learning rate decays by the same rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.cross_device import _override, _test
from bench.per_user_metrics import Score, per_user_ndcg
from fedrec.early_stopping import best_version, plateaus, smoothed, stale_versions
from fedrec.options import SimulationOptions
from fedrec.partition import local_view, partition_users
from fedrec.selection import Candidate, candidates_for, has_timestamps
from fedrec.short_federation import ShortFederation
from participant_sdk.recsys import (
    BPRConfig,
    Interactions,
    init_item_tensors,
    leave_one_out,
    load_movielens_100k,
)
from participant_sdk.recsys.splits import LeaveOneOutSplit, concat
from participant_sdk.recsys.trainers import fold_in, make_trainer, prepare_to_score

F32 = npt.NDArray[np.float32]
# a bounded run on a loaded machine: creating this file lowers the cap to the rounds done
STOP_FILE: Path | None = None
# a round's model: item tensors and every user's factors
State = tuple[dict[str, F32], F32]


@dataclasses.dataclass(frozen=True)
class ChosenSetup:
    """What a bench of the chosen recipe trains on: the data, its split and partition,
    and the options of the ``--chosen`` candidate with the ``--set`` overrides applied."""

    data: Interactions
    split: LeaveOneOutSplit
    groups: list[npt.NDArray[np.int64]]
    options: SimulationOptions
    candidate: Candidate
    overrides: dict[str, Any]


def add_chosen_arguments(parser: argparse.ArgumentParser) -> None:
    """The options :func:`chosen_setup` reads: data (or ``--shape``), partition, seed,
    ``--chosen`` recipe and ``--set FIELD=JSON`` overrides."""
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/ml-100k"))
    parser.add_argument(
        "--shape", help="a data shape of bench.generalisation (in process) instead of ML-100K"
    )
    parser.add_argument("--partition", default="per-user", choices=["iid", "skewed", "per-user"])
    parser.add_argument("--participants", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chosen", default="bpr+fedavg-sum")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")


def chosen_setup(args: argparse.Namespace) -> ChosenSetup:
    """Load and split the data, partition its users, and apply the ``--chosen`` candidate
    of the default path's recipes (as :mod:`bench.cross_device`) and the overrides."""
    overrides = dict(_override(item) for item in args.set)  # a typo fails before loading
    if args.shape:
        from bench.generalisation import SHAPES

        built = SHAPES[args.shape].build(False)
        assert built is not None, f"{args.shape} is not available here"
        data = built
    else:
        data, _ = load_movielens_100k(args.data / "u.data")
    split = leave_one_out(data)
    groups = partition_users(data, args.partition, args.participants, seed=args.seed)
    options = SimulationOptions(
        dataset="csv" if args.shape else "ml-100k",
        partition=args.partition,
        participants=args.participants,
        seed=args.seed,
    )
    candidates = candidates_for(
        options,
        timestamps=has_timestamps(split.train),
        users_per_participant=float(np.median([g.size for g in groups])),
        participants=len(groups),
    )
    found = [c for c in candidates if c.name == args.chosen]
    if not found:
        raise SystemExit(
            f"--chosen {args.chosen}: not a candidate here; one of "
            f"{sorted(c.name for c in candidates)}"
        )
    options = dataclasses.replace(found[0].apply(options), **overrides)
    return ChosenSetup(data, split, groups, options, found[0], overrides)


def _scorer(state: State) -> Score:
    tensors, users_factors = state
    q, b = tensors["item_factors"], tensors["item_bias"]
    return lambda users: np.asarray(users_factors[users] @ q.T + b[None, :], dtype=np.float32)


def stop_and_deploy(curve: list[float], window: int, patience: int) -> tuple[int, int]:
    """(rounds trained, round deployed) of the stop and deploy policies on ``curve``
    (round r's value at index r - 1) smoothed over ``window``."""
    for last in range(1, len(curve) + 1):
        scores = smoothed(dict(enumerate(curve[:last], start=1)), window)
        if stale_versions(scores, 0.0) >= patience:
            break
    found = best_version(scores)
    assert found is not None
    return last, found[0]


def federated_run(
    options: SimulationOptions,
    split: LeaveOneOutSplit,
    groups: list[npt.NDArray[np.int64]],
    cap: int,
    decay: tuple[float, int, int] | None,
) -> tuple[list[npt.NDArray], list[State], ShortFederation]:
    federation = ShortFederation(split.train, groups, options.trainer_config(), options.strategy())
    per_round: list[npt.NDArray] = []
    states: list[State] = []
    dim = options.dim
    for number in range(1, cap + 1):
        if STOP_FILE is not None and STOP_FILE.exists():
            print(f"  {STOP_FILE} exists: the cap is round {number - 1}", flush=True)
            break
        federation.advance()
        users_factors = np.zeros((split.train.num_users, dim), dtype=np.float32)
        for users, local, trainer in federation.participants:
            prepare_to_score(trainer, federation.tensors, local)
            users_factors[users] = trainer.user_factors
        state = ({k: v.copy() for k, v in federation.tensors.items()}, users_factors)
        values = per_user_ndcg(_scorer(state), split.train, split.valid)
        per_round.append(values)
        states.append(state)
        curve = [float(v.mean()) for v in per_round]
        if decay is not None:
            factor, wait, window = decay
            found = plateaus(smoothed(dict(enumerate(curve, start=1)), window), wait, 0.0)
            federation.step_scale = factor**found
        print(
            f"  federated round {number}: validation NDCG@10 {curve[-1]:.4f}, step scale "
            f"{federation.step_scale:g}",
            flush=True,
        )
    return per_round, states, federation


def central_run(
    config: BPRConfig, split: LeaveOneOutSplit, cap: int, decay: tuple[float, int, int] | None
) -> tuple[list[npt.NDArray], list[State], Any]:
    train = split.train
    trainer = make_trainer(config, num_users=train.num_users, num_items=train.num_items)
    tensors = init_item_tensors(train.num_items, config.dim, seed=config.seed, scale=0.01)
    per_round: list[npt.NDArray] = []
    states: list[State] = []
    scale = 1.0
    for number in range(1, cap + 1):
        update = trainer.train_round(tensors, train, learning_rate=config.learning_rate * scale)
        tensors = {"item_factors": update.item_factors, "item_bias": update.item_bias}
        state = ({k: v.copy() for k, v in tensors.items()}, trainer.user_factors.copy())
        per_round.append(per_user_ndcg(_scorer(state), train, split.valid))
        states.append(state)
        curve = [float(v.mean()) for v in per_round]
        if decay is not None:
            factor, wait, window = decay
            scale = factor ** plateaus(smoothed(dict(enumerate(curve, start=1)), window), wait, 0.0)
        print(f"  centralized round {number}: validation NDCG@10 {curve[-1]:.4f}", flush=True)
    return per_round, states, trainer


def split_halves(
    per_round: list[npt.NDArray], windows: list[int], patience: int, draws: int
) -> dict[int, dict[str, float]]:
    """Each rule's held-out score: choose on half A of the validation users, score on B."""
    matrix = np.stack(per_round)  # rounds x users
    rng = np.random.default_rng(7)
    held_out: dict[int, list[float]] = {w: [] for w in windows}
    for _ in range(draws):
        order = rng.permutation(matrix.shape[1])
        a, b = order[: order.size // 2], order[order.size // 2 :]
        curve_a = matrix[:, a].mean(axis=1).tolist()
        curve_b = matrix[:, b].mean(axis=1)
        for window in windows:
            _, chosen = stop_and_deploy(curve_a, window, patience)
            held_out[window].append(float(curve_b[chosen - 1]))
    reference = np.asarray(held_out[windows[0]])
    return {
        w: {
            "held_out_ndcg@10": round(float(np.mean(v)), 5),
            "minus_first_window": round(float(np.mean(np.asarray(v) - reference)), 5),
            "se_of_difference": round(
                float(np.std(np.asarray(v) - reference) / np.sqrt(len(v))), 5
            ),
        }
        for w, v in held_out.items()
    }


def federated_test(
    state: State,
    federation: ShortFederation,
    split: LeaveOneOutSplit,
    data: Interactions,
    steps: int,
) -> dict[str, float]:
    """The deployed version, each participant's users fitted to train + validation
    (``steps``: the rounds the rule trained, which seed the fold-in's sampling as in the
    product, where the fold-in follows the last round)."""
    tensors, factors = state
    history = concat(split.train, split.valid)
    fitted = np.zeros_like(factors)
    for users, local, trainer in federation.participants:
        trainer.user_factors = factors[users].copy()
        trainer.steps = steps
        prepare_to_score(trainer, tensors, local)
        fold_in(trainer, tensors, local_view(history, users))
        fitted[users] = trainer.user_factors
    return _test(_scorer((tensors, fitted)), split, data)


def central_test(
    state: State, trainer: Any, split: LeaveOneOutSplit, data: Interactions, steps: int
) -> dict[str, float]:
    tensors, factors = state
    trainer.user_factors = factors.copy()
    trainer.steps = steps
    fold_in(trainer, tensors, concat(split.train, split.valid))
    return _test(_scorer((tensors, trainer.user_factors)), split, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_chosen_arguments(parser)
    parser.add_argument("--cap", type=int, default=90, help="rounds trained (no stop)")
    parser.add_argument("--windows", default="1,3,5")
    parser.add_argument("--halves", type=int, default=400)
    parser.add_argument(
        "--test",
        default="",
        help="windows whose deployed version is tested, or auto: the first window and the "
        "best on split halves; @FILE: read that from FILE once training is done",
    )
    parser.add_argument("--decay", help="FACTOR:PATIENCE[:WINDOW], e.g. 0.5:5:3")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--stop-file", type=Path, help="lower the cap when this file appears")
    args = parser.parse_args()
    global STOP_FILE
    STOP_FILE = args.stop_file
    setup = chosen_setup(args)
    data, split, groups, options = setup.data, setup.split, setup.groups, setup.options
    windows = [int(w) for w in args.windows.split(",")]
    decay = None
    if args.decay:
        parts = args.decay.split(":")
        decay = (float(parts[0]), int(parts[1]), int(parts[2]) if len(parts) > 2 else windows[0])
    patience = options.patience or args.cap
    config = options.trainer_config()
    assert isinstance(config, BPRConfig)
    found: dict[str, Any] = {
        "chosen": setup.candidate.name,
        "settings": setup.candidate.settings,
        "overrides": setup.overrides,
        "patience": patience,
        "cap": args.cap,
        "decay": decay,
    }
    cpu = time.process_time()
    fed_rounds, fed_states, federation = federated_run(options, split, groups, args.cap, decay)
    found["cap"] = len(fed_rounds)  # a stop file may have lowered it; the baseline follows
    found["federated_cpu_s"] = round(time.process_time() - cpu, 1)
    cpu = time.process_time()
    central_rounds, central_states, trainer = central_run(
        config.replace(epochs=options.local_epochs), split, len(fed_rounds), decay
    )
    found["central_cpu_s"] = round(time.process_time() - cpu, 1)
    for name, per_round in (("federated", fed_rounds), ("centralized", central_rounds)):
        curve = [float(v.mean()) for v in per_round]
        rules = {}
        for window in windows:
            trained, chosen = stop_and_deploy(curve, window, patience)
            rules[window] = {
                "rounds_trained": trained,
                "deployed_round": chosen,
                "validation_ndcg@10": round(curve[chosen - 1], 5),
                "smoothed_validation": round(
                    smoothed(dict(enumerate(curve[:trained], start=1)), window)[chosen], 5
                ),
                "stopped_before_cap": trained < len(curve),
            }
        found[name] = {
            "curve": [round(v, 4) for v in curve],
            "rules": rules,
            "split_halves": split_halves(per_round, windows, patience, args.halves),
        }
        print(name, json.dumps(found[name]["rules"]), json.dumps(found[name]["split_halves"]))
    if args.test.startswith("@"):
        # decided while this run trained (e.g. on another data set's validation): read now
        args.test = Path(args.test[1:]).read_text().strip()
    if args.test == "auto":
        # the first window, and the one whose choices scored best on held-out halves
        # (federated and centralized alike: the rule serves both)
        gain = {
            w: found["federated"]["split_halves"][w]["minus_first_window"]
            + found["centralized"]["split_halves"][w]["minus_first_window"]
            for w in windows
        }
        tested = sorted({windows[0], max(windows, key=lambda w: (gain[w], -w))})
        found["finalist_by_split_halves"] = tested[-1] if len(tested) > 1 else windows[0]
    else:
        tested = [int(w) for w in args.test.split(",") if w]
    for window in tested:
        fed_rule = found["federated"]["rules"][window]
        cen_rule = found["centralized"]["rules"][window]
        fed_round, cen_round = fed_rule["deployed_round"], cen_rule["deployed_round"]
        fed = federated_test(
            fed_states[fed_round - 1], federation, split, data, fed_rule["rounds_trained"]
        )
        cen = central_test(
            central_states[cen_round - 1], trainer, split, data, cen_rule["rounds_trained"]
        )
        found["federated"]["rules"][window]["test"] = fed
        found["centralized"]["rules"][window]["test"] = cen
        print(
            f"window {window}: test NDCG@10 federated {fed['ndcg@10']:.4f} (round {fed_round}), "
            f"centralized {cen['ndcg@10']:.4f} (round {cen_round}), "
            f"{fed['ndcg@10'] / cen['ndcg@10']:.3f} x",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(found, indent=2, default=str))


if __name__ == "__main__":
    main()
