"""Offline quality benchmark: centralized vs federated BPR-MF on MovieLens 100K.

Runs the protocol of ``shared/EVALUATION.md`` (v1) end to end:

1. leave-one-out split (checked against the protocol files when present) and the
   80/20 split;
2. for each setting — ``central`` (one participant holding everyone),
   ``iid-5``, ``skewed-5`` and ``per-user`` (943 participants) — the same tuning
   budget: the same number of candidate configurations, each trained with seed 0 on
   ``Tr_u`` for up to ``max_rounds`` rounds and scored on ``v_u`` every
   ``check_every`` rounds; the best (candidate, rounds) by validation NDCG@10 wins;
3. final fits on ``Tr_u ∪ {v_u}`` with seeds 0, 1, 2 → full-ranking and sampled-99
   test metrics, plus a fit on the 80/20 training part → 80/20 metrics;
4. a table of mean ± std, the selected hyperparameters, wall times and the bytes
   uploaded per round.

The federation runs in-process (:mod:`fedrec.inprocess`) on the real SDK trainer,
wire codec and coordinator accumulator. Usage::

    python -m bench.quality [--data DIR] [--quick] [--seeds 0,1,2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrec.inprocess import FedResult, RowNormalization, simulate
from fedrec.partition import PartitionScheme, partition_users
from participant_sdk.recsys.data import Interactions, load_movielens_100k
from participant_sdk.recsys.metrics import (
    draw_sampled_negatives,
    evaluate_loo,
    evaluate_sampled,
    evaluate_split,
)
from participant_sdk.recsys.model import BPRConfig
from participant_sdk.recsys.popularity import PopularityModel
from participant_sdk.recsys.splits import LeaveOneOutSplit, RandomSplit, leave_one_out, split_80_20
from participant_sdk.wire import WireError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(
    os.environ.get("FEDREC_ML100K_DIR", REPO_ROOT / ".." / "shared/datasets/ml-100k")
)

# Shared base recipe, chosen on the validation split (centralized, seed 0): 128 factors,
# reg 0.01, one local epoch per round, learning rate x0.96 per round, 3 negatives per
# positive, each the harder of 2 uniform candidates. Against the EVALUATION.md numpy
# anchor recipe (1 uniform negative, constant lr) validation NDCG@10 went ~0.060 -> ~0.065.
# Recency weighting (each user's 10 latest interactions visited 40x as often as older
# ones) then took it to ~0.092; RESULTS.md section 5 has the exploration. With it an
# epoch visits each recent interaction once per negative and each older one 1/40 as
# often, ~1/8 of an unweighted epoch on ML-100K, hence 8 epochs per round.
BASE = BPRConfig(
    dim=128,
    learning_rate=0.08,
    reg=0.01,
    negatives=3,
    epochs=8,
    batch_size=256,
    init_scale=0.1,
    hard_negatives=2,
    recency_window=10,
    recency_weight=40.0,
)
LR_DECAY = 0.96


@dataclass(frozen=True)
class Candidate:
    """One point of a setting's tuning grid."""

    learning_rate: float
    server_lr: float
    normalization: RowNormalization = "touched"
    server_momentum: float = 0.0
    uniform_weights: bool = False

    def label(self) -> str:
        momentum = f", momentum={self.server_momentum:g}" if self.server_momentum else ""
        uniform = ", uniform weights" if self.uniform_weights else ""
        return (
            f"lr={self.learning_rate:g}, server_lr={self.server_lr:g}, "
            f"normalization={self.normalization}{momentum}{uniform}"
        )


@dataclass(frozen=True)
class Setting:
    """A partition of the users into participants, with its tuning grid."""

    name: str
    scheme: PartitionScheme | None  # None = centralized
    n: int
    grid: tuple[Candidate, ...]


# Same budget everywhere: 3 candidates x max_rounds. Centralized tunes the (only)
# learning rate; the federations tune the server learning rate at the base local rate,
# with the "total" row normalization (each item row's weighted delta sum divided by the
# round's total example weight). With K equal silos that sum is ~1/K of what one epoch
# of centralized SGD would add, so the centralized grid lr in {0.05, 0.08, 0.12}
# corresponds to server_lr ~ K x {0.6, 1, 1.5}; {2, 4, 8} brackets it for K = 5 (with
# 5 silos every row is touched by every silo, through the sampled negatives, so
# "total" and "touched" nearly coincide). One participant per user is one large
# synchronous batch per round, so server_lr stays far below K = 943. Per-user updates
# are weighted uniformly (accumulator weighting="uniform"): a participant's delta
# already sums its examples' gradients, so example weights count a heavy user's
# examples twice; uniform weights make a row's step server_lr / K x the plain sum of
# the users' deltas. (With example weights, server_lr 120 oscillated; see RESULTS.md.)
FED_NORMALIZATION: RowNormalization = "total"
SETTINGS = (
    Setting("central", None, 1, tuple(Candidate(lr, 1.0) for lr in (0.05, 0.08, 0.12))),
    Setting(
        "iid-5",
        "iid",
        5,
        tuple(Candidate(0.08, s, FED_NORMALIZATION) for s in (2.0, 4.0, 8.0)),
    ),
    Setting(
        "skewed-5",
        "skewed",
        5,
        tuple(Candidate(0.08, s, FED_NORMALIZATION) for s in (2.0, 4.0, 8.0)),
    ),
    Setting(
        "per-user",
        "per-user",
        0,
        tuple(
            Candidate(0.08, s, FED_NORMALIZATION, uniform_weights=True) for s in (25.0, 50.0, 100.0)
        ),
    ),
)


@dataclass
class Data:
    """Everything the runs need, loaded once per process."""

    loo: LeaveOneOutSplit
    split: RandomSplit
    negatives: npt.NDArray[np.int64]
    full: Interactions


_DATA: dict[str, Data] = {}


def load(data_dir: Path) -> Data:
    """Load ML-100K, build both splits and the sampled negatives (cached per process)."""
    key = str(data_dir)
    if key not in _DATA:
        inter, _ = load_movielens_100k(data_dir)
        loo = leave_one_out(inter)
        negatives = draw_sampled_negatives(inter, loo.test.users)
        _DATA[key] = Data(loo=loo, split=split_80_20(inter), negatives=negatives, full=inter)
    return _DATA[key]


def groups_for(setting: Setting, train: Interactions) -> list[npt.NDArray[np.int64]]:
    if setting.scheme is None:
        return [np.arange(train.num_users, dtype=np.int64)]
    return partition_users(train, setting.scheme, setting.n, seed=0)


def config_for(cand: Candidate, seed: int) -> BPRConfig:
    return BASE.replace(learning_rate=cand.learning_rate, seed=seed)


@dataclass
class TuneJob:
    data_dir: Path
    setting: Setting
    cand: Candidate
    max_rounds: int
    check_every: int


def run_tune(job: TuneJob) -> dict[str, Any]:
    """Train one candidate on Tr_u with seed 0; validation NDCG@10 at each checkpoint."""
    data = load(job.data_dir)
    train = data.loo.train

    def ev(res: FedResult) -> dict[str, float]:
        m = evaluate_loo(res.score, train, data.loo.valid)
        return {"ndcg@10": m["ndcg@10"], "hr@10": m["hr@10"]}

    start = time.perf_counter()
    history: list[tuple[int, dict[str, float]]] = []
    try:
        res = simulate(
            train,
            groups_for(job.setting, train),
            config_for(job.cand, 0),
            rounds=job.max_rounds,
            server_lr=job.cand.server_lr,
            normalization=job.cand.normalization,
            server_momentum=job.cand.server_momentum,
            uniform_weights=job.cand.uniform_weights,
            lr_decay_per_round=LR_DECAY,
            eval_every=job.check_every,
            eval_fn=ev,
        )
        history = res.history
    except WireError as exc:
        # A too-large server_lr can diverge; the codec then refuses the non-finite
        # update. That candidate simply loses the selection.
        history = [(0, {"ndcg@10": float("-inf"), "hr@10": 0.0, "diverged": 1.0})]
        del exc
    return {
        "setting": job.setting.name,
        "cand": job.cand,
        "history": history,
        "seconds": time.perf_counter() - start,
    }


@dataclass
class FinalJob:
    data_dir: Path
    setting: Setting
    cand: Candidate
    rounds: int
    seed: int


def run_final(job: FinalJob) -> dict[str, Any]:
    """Fit on Tr_u ∪ {v_u} (test metrics) and on the 80/20 train part (80/20 metrics)."""
    data = load(job.data_dir)
    start = time.perf_counter()
    trainval = data.loo.train_and_valid()
    cfg = config_for(job.cand, job.seed)
    res = simulate(
        trainval,
        groups_for(job.setting, trainval),
        cfg,
        rounds=job.rounds,
        server_lr=job.cand.server_lr,
        normalization=job.cand.normalization,
        server_momentum=job.cand.server_momentum,
        uniform_weights=job.cand.uniform_weights,
        lr_decay_per_round=LR_DECAY,
    )
    metrics = evaluate_loo(res.score, trainval, data.loo.test)
    metrics.update(evaluate_sampled(res.score, data.loo.test, data.negatives))
    fit_seconds = time.perf_counter() - start
    res8020 = simulate(
        data.split.train,
        groups_for(job.setting, data.split.train),
        cfg,
        rounds=job.rounds,
        server_lr=job.cand.server_lr,
        normalization=job.cand.normalization,
        server_momentum=job.cand.server_momentum,
        uniform_weights=job.cand.uniform_weights,
        lr_decay_per_round=LR_DECAY,
    )
    m8020 = evaluate_split(res8020.score, data.split.train, data.split.test)
    metrics.update({f"8020_{k}": v for k, v in m8020.items()})
    return {
        "setting": job.setting.name,
        "seed": job.seed,
        "metrics": metrics,
        "fit_seconds": fit_seconds,
        "bytes_per_round": float(np.mean(res.bytes_per_round)),
        "participants": len(groups_for(job.setting, trainval)),
    }


COLUMNS = (
    ("hr@10", "HR@10"),
    ("ndcg@10", "NDCG@10"),
    ("precision@10", "P@10"),
    ("recall@10", "R@10"),
    ("sampled_hr@10", "s99 HR"),
    ("sampled_ndcg@10", "s99 NDCG"),
    ("8020_precision@10", "80/20 P"),
    ("8020_recall@10", "80/20 R"),
    ("8020_ndcg@10", "80/20 NDCG"),
)


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ML-100K directory")
    parser.add_argument("--quick", action="store_true", help="1 candidate, 20 rounds, seed 0")
    parser.add_argument("--seeds", default=None, help="comma-separated training seeds (0,1,2)")
    parser.add_argument("--settings", default=None, help="comma-separated subset of settings")
    parser.add_argument("--max-rounds", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path, default=None, help="write raw results here")
    parser.add_argument(
        "--select",
        default=None,
        help=(
            "skip tuning: 'setting:lr:server_lr:rounds[:normalization[:momentum[:uniform]]],...' "
            "(e.g. from an earlier run's log)"
        ),
    )
    args = parser.parse_args(argv)

    data_dir = args.data.resolve()
    if not (data_dir / "u.data").is_file():
        print(
            f"MovieLens 100K not found at {data_dir}.\n"
            "Download ml-100k (https://grouplens.org/datasets/movielens/100k/), unzip it so that\n"
            f"{data_dir}/u.data exists, or pass --data DIR / set FEDREC_ML100K_DIR.\n"
            "Its licence forbids redistribution: keep it outside the repository.",
            file=sys.stderr,
        )
        return 2
    seeds = (
        [int(s) for s in args.seeds.split(",")]
        if args.seeds
        else ([0] if args.quick else [0, 1, 2])
    )
    max_rounds = args.max_rounds or (20 if args.quick else 90)
    check_every = 5 if args.quick else 10
    settings = [s for s in SETTINGS if not args.settings or s.name in args.settings.split(",")]
    if args.quick:
        # keep the middle candidate only: same (reduced) budget for every setting
        settings = [Setting(s.name, s.scheme, s.n, (s.grid[1],)) for s in settings]

    t0 = time.perf_counter()
    data = load(data_dir)
    _check_protocol_files(data_dir, data)
    pop_test = PopularityModel(data.loo.train_and_valid())
    pop = evaluate_loo(pop_test.score, data.loo.train_and_valid(), data.loo.test)
    pop.update(evaluate_sampled(pop_test.score, data.loo.test, data.negatives))
    pop8020 = PopularityModel(data.split.train)
    pop.update(
        {
            f"8020_{k}": v
            for k, v in evaluate_split(pop8020.score, data.split.train, data.split.test).items()
        }
    )
    print(f"popularity floor: HR@10 {pop['hr@10']:.4f}, NDCG@10 {pop['ndcg@10']:.4f}", flush=True)

    # ---- tuning (seed 0, validation)
    tune_jobs = [TuneJob(data_dir, s, c, max_rounds, check_every) for s in settings for c in s.grid]
    best: dict[str, tuple[float, Candidate, int]] = {}
    tune_seconds: dict[str, float] = {}
    if args.select:
        tune_jobs = []
        for part in args.select.split(","):
            name, lr, slr, rounds, *extra = part.split(":")
            normalization: RowNormalization = "total" if extra[:1] == ["total"] else "touched"
            momentum = float(extra[1]) if len(extra) > 1 else 0.0
            uniform = extra[2:3] == ["uniform"]
            best[name] = (
                float("nan"),
                Candidate(float(lr), float(slr), normalization, momentum, uniform),
                int(rounds),
            )
            tune_seconds[name] = float("nan")
        settings = [s for s in settings if s.name in best]
        print(f"tuning skipped, selected: {args.select}", flush=True)
    else:
        print(f"tuning: {len(tune_jobs)} runs of up to {max_rounds} rounds ...", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for out in pool.map(run_tune, tune_jobs):
            name = out["setting"]
            tune_seconds[name] = tune_seconds.get(name, 0.0) + out["seconds"]
            curve = ", ".join(f"{r}:{m['ndcg@10']:.4f}" for r, m in out["history"])
            print(f"  {name:9s} {out['cand'].label():28s} val NDCG@10 by round {curve}", flush=True)
            for rounds, m in out["history"]:
                if name not in best or m["ndcg@10"] > best[name][0]:
                    best[name] = (m["ndcg@10"], out["cand"], rounds)

        # ---- final fits
        final_jobs = [
            FinalJob(data_dir, s, best[s.name][1], best[s.name][2], seed)
            for s in settings
            for seed in seeds
        ]
        print(f"final fits: {len(final_jobs)} runs ...", flush=True)
        finals: dict[str, list[dict[str, Any]]] = {}
        for out in pool.map(run_final, final_jobs):
            finals.setdefault(out["setting"], []).append(out)
            m = out["metrics"]
            print(
                f"  {out['setting']:9s} seed {out['seed']}: NDCG@10 {m['ndcg@10']:.4f} "
                f"HR@10 {m['hr@10']:.4f} ({out['fit_seconds']:.0f}s)",
                flush=True,
            )

    # ---- report
    print()
    print(f"ML-100K, protocol v1, seeds {seeds}; total wall time {time.perf_counter() - t0:.0f}s")
    header = "| method | " + " | ".join(label for _, label in COLUMNS) + " |"
    print(header)
    print("|" + "---|" * (len(COLUMNS) + 1))
    print("| popularity | " + " | ".join(f"{pop[k]:.4f}" for k, _ in COLUMNS) + " |")
    for s in settings:
        runs = finals[s.name]
        cells = [_fmt([r["metrics"][k] for r in runs]) for k, _ in COLUMNS]
        print(f"| {s.name} | " + " | ".join(cells) + " |")
    print()
    print(
        "| method | selected | val NDCG@10 | tune s | final fit s (mean) | participants "
        "| MB uploaded / round |"
    )
    print("|---|---|---|---|---|---|---|")
    for s in settings:
        val, cand, rounds = best[s.name]
        runs = finals[s.name]
        print(
            f"| {s.name} | {cand.label()}, rounds={rounds} | {val:.4f} | "
            f"{tune_seconds[s.name]:.0f} | {np.mean([r['fit_seconds'] for r in runs]):.0f} | "
            f"{runs[0]['participants']} | {runs[0]['bytes_per_round'] / 1e6:.2f} |"
        )
    central = finals.get("central")
    if central:
        ref = float(np.mean([r["metrics"]["ndcg@10"] for r in central]))
        for s in settings:
            if s.name != "central":
                mean = float(np.mean([r["metrics"]["ndcg@10"] for r in finals[s.name]]))
                print(f"{s.name}: test NDCG@10 {mean:.4f} = {mean / ref:.3f} x central")
    print(f"base recipe: {BASE}, lr decay per round {LR_DECAY}")
    if args.json:
        payload = {
            "popularity": pop,
            "selected": {k: [v[0], v[1].label(), v[2]] for k, v in best.items()},
            "finals": finals,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


def _check_protocol_files(data_dir: Path, data: Data) -> None:
    """Warn (not fail) when the split differs from the shipped protocol files."""
    path = data_dir / "protocol" / "loo_test.tsv"
    if not path.is_file():
        print("note: protocol/ files absent; split computed from u.data only", flush=True)
        return
    rows = np.loadtxt(path, dtype=np.int64, ndmin=2)
    test = data.loo.test
    ids = np.array(
        [
            [int(data.full.user_ids[u]), int(data.full.item_ids[i])]
            for u, i in zip(test.users, test.items, strict=True)
        ]
    )
    status = "matches" if np.array_equal(ids, rows[:, :2]) else "DIFFERS FROM"
    print(f"leave-one-out test split {status} protocol/loo_test.tsv", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
