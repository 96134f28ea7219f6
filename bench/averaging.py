"""Average the global model over recent versions: does it lift the per-user path? (issue 9)

``nice python -m bench.averaging --partition per-user --cap 70 [--set FIELD=JSON]``
trains the default path's chosen recipe (``--chosen``, as :mod:`bench.cross_device`) to
a round cap without stopping, and the centralized baseline beside it. After every
round it scores, on the validation split, the round's own model and averaged ones:
item tensors averaged over the last ``W`` versions (Polyak over a window) and an
exponential moving average with decay ``beta`` (``ema_r = beta ema_{r-1} + (1 - beta)
x_r``), each scored with the users' factors of that round (what a participant holds
when the averaged version reaches it); ``--user-betas`` scores the round's item tensors
with an EMA of each user's own factors instead (a device could keep it privately).
The centralized baseline gets the same
averages, so a rule is judged on both curves. Every rule's curve then goes through the
product's stop and deploy policies (:func:`bench.smoothing.stop_and_deploy`, window
and patience of the chosen recipe), and its deployed version's validation figure is
printed. The test split is read only for the rules named by ``--test``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.per_user_metrics import per_user_ndcg
from bench.smoothing import (
    State,
    _scorer,
    add_chosen_arguments,
    central_test,
    chosen_setup,
    federated_test,
    stop_and_deploy,
)
from fedrec.short_federation import ShortFederation
from participant_sdk.recsys import (
    BPRConfig,
    init_item_tensors,
)
from participant_sdk.recsys.splits import LeaveOneOutSplit
from participant_sdk.recsys.trainers import make_trainer, prepare_to_score

F32 = npt.NDArray[np.float32]


class Averages:
    """The averaged item tensors of every rule, updated once per round."""

    def __init__(
        self, windows: list[int], betas: list[float], user_betas: list[float] | None = None
    ) -> None:
        self.windows, self.betas = windows, betas
        self.user_betas = user_betas or []
        self.recent: list[dict[str, F32]] = []
        self.ema: dict[float, dict[str, npt.NDArray[np.float64]]] = {}

    def update(self, tensors: dict[str, F32]) -> dict[str, dict[str, F32]]:
        self.recent = [*self.recent, tensors][-max(self.windows, default=1) :]
        found: dict[str, dict[str, F32]] = {}
        for w in self.windows:
            last = self.recent[-w:]
            found[f"mean{w}"] = {
                k: np.asarray(
                    np.mean([t[k] for t in last], axis=0, dtype=np.float64), dtype=np.float32
                )
                for k in tensors
            }
        for beta in self.betas:
            prev = self.ema.get(beta)
            now = {
                k: (
                    v.astype(np.float64)
                    if prev is None
                    else beta * prev[k] + (1.0 - beta) * v.astype(np.float64)
                )
                for k, v in tensors.items()
            }
            self.ema[beta] = now
            found[f"ema{beta:g}"] = {k: v.astype(np.float32) for k, v in now.items()}
        return found


def _decay_by_round(trainer: Any, base_lr: float, decay: float) -> None:
    """Wrap ``trainer.train_round``: learning rate ``base_lr * decay ** rounds trained``."""
    inner = trainer.train_round

    def train_round(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("learning_rate", base_lr * decay**trainer.steps)
        return inner(*args, **kwargs)

    trainer.train_round = train_round


def run(
    kind: str,
    advance: Any,
    split: LeaveOneOutSplit,
    cap: int,
    averages: Averages,
) -> tuple[dict[str, list[float]], dict[str, list[State]]]:
    curves: dict[str, list[float]] = {}
    states: dict[str, list[State]] = {}
    user_ema: dict[float, npt.NDArray[np.float64]] = {}
    for number in range(1, cap + 1):
        tensors, users_factors = advance()
        variants = {
            name: (item_tensors, users_factors)
            for name, item_tensors in {"raw": tensors, **averages.update(tensors)}.items()
        }
        # the users' own factors averaged instead (private: each device can keep its EMA)
        for beta in averages.user_betas:
            prev = user_ema.get(beta)
            now = users_factors.astype(np.float64)
            user_ema[beta] = now if prev is None else beta * prev + (1.0 - beta) * now
            variants[f"user-ema{beta:g}"] = (tensors, user_ema[beta].astype(np.float32))
        line = []
        for name, state in variants.items():
            value = float(per_user_ndcg(_scorer(state), split.train, split.valid).mean())
            curves.setdefault(name, []).append(value)
            states.setdefault(name, []).append(state)
            line.append(f"{name} {value:.4f}")
        print(f"  {kind} round {number}: " + ", ".join(line), flush=True)
    return curves, states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_chosen_arguments(parser)
    parser.add_argument("--cap", type=int, default=70)
    parser.add_argument("--windows", default="3,5,10")
    parser.add_argument("--betas", default="0.5,0.8,0.9")
    parser.add_argument(
        "--user-betas", default="", help="EMAs of the users' factors (items raw), e.g. 0.5,0.8"
    )
    parser.add_argument("--no-central", action="store_true")
    parser.add_argument("--test", default="", help="rules whose deployed version is tested")
    parser.add_argument(
        "--round-decay",
        type=float,
        help="local learning rate x this per round a trainer has trained (federated "
        "devices and the centralized baseline alike; the fold-in follows the schedule)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    setup = chosen_setup(args)
    data, split, groups, options = setup.data, setup.split, setup.groups, setup.options
    windows = [int(w) for w in args.windows.split(",") if w]
    betas = [float(b) for b in args.betas.split(",") if b]
    patience = options.patience or args.cap
    config = options.trainer_config()
    assert isinstance(config, BPRConfig)
    found: dict[str, Any] = {
        "chosen": setup.candidate.name,
        "overrides": setup.overrides,
        "cap": args.cap,
    }

    federation = ShortFederation(split.train, groups, config, options.strategy())

    def fed_advance() -> tuple[dict[str, F32], F32]:
        federation.advance()
        users_factors = np.zeros((split.train.num_users, options.dim), dtype=np.float32)
        for users, local, trainer in federation.participants:
            prepare_to_score(trainer, federation.tensors, local)
            users_factors[users] = trainer.user_factors
        return {k: v.copy() for k, v in federation.tensors.items()}, users_factors

    central_config = config.replace(epochs=options.local_epochs)
    central = make_trainer(
        central_config, num_users=split.train.num_users, num_items=split.train.num_items
    )
    central_tensors = init_item_tensors(
        split.train.num_items, config.dim, seed=config.seed, scale=0.01
    )

    def central_advance() -> tuple[dict[str, F32], F32]:
        nonlocal central_tensors
        update = central.train_round(central_tensors, split.train)
        central_tensors = {"item_factors": update.item_factors, "item_bias": update.item_bias}
        return {k: v.copy() for k, v in central_tensors.items()}, central.user_factors.copy()

    if args.round_decay is not None:
        found["round_decay"] = args.round_decay
        trainers = [t for _u, _l, t in federation.participants] + [central]
        for trainer in trainers:
            _decay_by_round(trainer, config.learning_rate, args.round_decay)

    results: dict[str, Any] = {}
    runs = [("federated", fed_advance)] + (
        [] if args.no_central else [("centralized", central_advance)]
    )
    all_states: dict[str, dict[str, list[State]]] = {}
    for kind, advance in runs:
        cpu = time.process_time()
        user_betas = [float(b) for b in args.user_betas.split(",") if b]
        averages = Averages(windows, betas, user_betas)
        curves, states = run(kind, advance, split, args.cap, averages)
        all_states[kind] = states
        rules = {}
        for name, curve in curves.items():
            trained, chosen = stop_and_deploy(curve, options.validation_window, patience)
            rules[name] = {
                "rounds_trained": trained,
                "deployed_round": chosen,
                "validation_ndcg@10": round(curve[chosen - 1], 5),
                "best_raw_curve": round(max(curve[:trained]), 5),
                "mean_last_20": round(float(np.mean(curve[-20:])), 5),
            }
        results[kind] = {
            "cpu_s": round(time.process_time() - cpu, 1),
            "rules": rules,
            "curves": {k: [round(v, 4) for v in c] for k, c in curves.items()},
        }
        for name, rule in rules.items():
            print(f"{kind} {name}: {json.dumps(rule)}", flush=True)
    for name in [t for t in args.test.split(",") if t]:
        for kind in results:
            rule = results[kind]["rules"][name]
            state = all_states[kind][name][rule["deployed_round"] - 1]
            if kind == "federated":
                test = federated_test(state, federation, split, data, rule["rounds_trained"])
            else:
                test = central_test(state, central, split, data, rule["rounds_trained"])
            rule["test"] = test
            print(f"{kind} {name}: test NDCG@10 {test['ndcg@10']:.4f}", flush=True)
    found.update(results)
    if args.json:
        args.json.write_text(json.dumps(found, indent=2, default=str))


if __name__ == "__main__":
    main()
