"""Centralized anchors beside our models, on the ``shared/EVALUATION.md`` protocol (v1).

Rows: popularity (floor), centralized EASE (ours, numpy), the ``implicit`` package's
ALS (confidence-weighted) and BPR, our centralized BPR-MF with ``fedrec simulate``'s
defaults, and the federated default (a ``fedrec simulate --report`` JSON passed with
``--report``, or run here with ``--simulate``).

Every trained row follows the protocol: leave-one-out split; each setting of a small
grid trained with seed 0 on ``Tr_u`` and scored on ``v_u`` (full ranking, NDCG@10) at
each checkpoint (iterations / epochs / rounds); the best (setting, checkpoint) is
retrained on ``Tr_u ∪ {v_u}`` with seeds 0, 1, 2 (one run for deterministic models)
and scored once on ``t_u``. Metrics and splits are the project's own
(:mod:`participant_sdk.recsys.metrics`, :mod:`participant_sdk.recsys.splits`), so every
row is computed by the same code. Usage::

    pip install -e '.[bench]'          # implicit, for the ALS and BPR rows
    nice python -m bench.anchors                                   # ML-100K
    nice python -m bench.anchors --dataset csv --data plays.csv --user-col user \\
        --item-col artist --strength-col plays [--time-col ts] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.anchor_models import IMPLICIT_MISSING, Anchor, anchors, implicit_available
from participant_sdk.recsys.data import Interactions, load_csv, load_movielens_100k
from participant_sdk.recsys.metrics import (
    ScoreFn,
    draw_sampled_negatives,
    evaluate_loo,
    evaluate_sampled,
)
from participant_sdk.recsys.splits import LeaveOneOutSplit, leave_one_out

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(
    os.environ.get("FEDREC_ML100K_DIR", REPO_ROOT / ".." / "shared/datasets/ml-100k")
)
METRICS = ("ndcg@10", "hr@10", "precision@10", "recall@10", "sampled_ndcg@10")
LABELS = ("NDCG@10", "HR@10", "P@10", "R@10", "s99 NDCG@10")
SAMPLED = 99  # the protocol's sampled variant: 99 negatives per evaluated user
LIBRARY = ("als", "bpr")  # the anchors "users would pick", for the ratio column


@dataclass
class Protocol:
    """The split and what the final scoring needs, built once per data set."""

    name: str
    full: Interactions
    split: LeaveOneOutSplit
    trainval: Interactions
    negatives: np.ndarray | None  # None: some user has fewer than 99 unseen items

    @classmethod
    def build(cls, name: str, full: Interactions) -> Protocol:
        split = leave_one_out(full)
        seen = np.bincount(full.users, minlength=full.num_users)[split.test.users]
        sampled = split.test.users.size > 0 and full.num_items - int(seen.max()) >= SAMPLED
        return cls(
            name=name,
            full=full,
            split=split,
            trainval=split.train_and_valid(),
            negatives=draw_sampled_negatives(full, split.test.users, n=SAMPLED)
            if sampled
            else None,
        )


@dataclass
class Row:
    """One line of the table: the chosen setting, its validation and test figures."""

    method: str
    label: str
    setting: str
    validation: dict[str, float]
    test: list[dict[str, float]]
    tune_seconds: float
    fit_seconds: float
    note: str = ""
    curves: list[dict[str, Any]] = field(default_factory=list)

    def test_mean(self, key: str) -> float:
        return float(np.mean([m[key] for m in self.test])) if self.test else float("nan")


def _setting_label(setting: dict[str, Any], step: int, anchor: Anchor) -> str:
    shown = {k: v for k, v in setting.items() if k != "threads"}
    if anchor.checkpoints != (0,):
        shown["steps"] = step
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def tune(
    anchor: Anchor, proto: Protocol, verbose: bool = False
) -> tuple[dict[str, Any], int, float, list[dict[str, Any]]]:
    """Each grid setting, seed 0, on ``Tr_u``; the best (setting, step) by validation NDCG@10.
    ``verbose`` prints each setting's best as it ends (a large grid runs for an hour)."""
    train, valid = proto.split.train, proto.split.valid
    best: tuple[float, dict[str, Any], int] | None = None
    curves: list[dict[str, Any]] = []
    for setting in anchor.grid:
        curve: list[tuple[int, float]] = []
        started = time.perf_counter()

        def on_checkpoint(
            step: int, score: ScoreFn, curve: list[tuple[int, float]] = curve
        ) -> bool:
            ndcg = evaluate_loo(score, train, valid)["ndcg@10"]
            curve.append((step, ndcg))
            if anchor.patience is None:
                return True
            peak = max(range(len(curve)), key=lambda k: curve[k][1])
            return len(curve) - 1 - peak < anchor.patience

        anchor.fit(train, setting, 0, anchor.checkpoints, on_checkpoint)
        curves.append({"setting": dict(setting), "validation_ndcg@10": curve})
        if verbose and curve:
            step, ndcg = max(curve, key=lambda point: point[1])
            print(
                f"    {_setting_label(dict(setting), step, anchor)}: val NDCG@10 {ndcg:.4f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        for step, ndcg in curve:
            if best is None or ndcg > best[0]:
                best = (ndcg, dict(setting), step)
    if best is None:
        raise RuntimeError(f"{anchor.name}: the fit produced no checkpoint")
    return best[1], best[2], best[0], curves


def final_fit(
    anchor: Anchor, proto: Protocol, setting: dict[str, Any], step: int, seed: int
) -> dict[str, float]:
    """Retrain on ``Tr_u ∪ {v_u}`` for ``step`` steps; full-ranking and sampled test metrics."""
    out: dict[str, float] = {}

    def on_checkpoint(_step: int, score: ScoreFn) -> bool:
        out.update(evaluate_loo(score, proto.trainval, proto.split.test))
        if proto.negatives is not None:
            out.update(evaluate_sampled(score, proto.split.test, proto.negatives))
        return True

    anchor.fit(proto.trainval, setting, seed, (step,), on_checkpoint)
    return out


def run_anchor(anchor: Anchor, proto: Protocol, seeds: list[int], verbose: bool = False) -> Row:
    """Tune on validation, then retrain and test with each seed (one if deterministic)."""
    started = time.perf_counter()
    setting, step, val_ndcg, curves = tune(anchor, proto, verbose)
    tune_seconds = time.perf_counter() - started
    tests: list[dict[str, float]] = []
    fit_times: list[float] = []
    for seed in seeds[:1] if anchor.deterministic else seeds:
        started = time.perf_counter()
        tests.append(final_fit(anchor, proto, setting, step, seed))
        fit_times.append(time.perf_counter() - started)
    return Row(
        method=anchor.name,
        label=anchor.label,
        setting=_setting_label(setting, step, anchor),
        validation={"ndcg@10": val_ndcg},
        test=tests,
        tune_seconds=tune_seconds,
        fit_seconds=float(np.mean(fit_times)),
        curves=curves,
    )


# ---------------------------------------------------------------------------- federated row
def federated_rows(report: dict[str, Any], source: str) -> list[Row]:
    """The federated (and simulate's own centralized) rows of a ``fedrec simulate`` report."""
    final = report.get("final", {})
    options = report.get("options", {})
    history = report.get("history", [])
    vals = [h.get("validation_of_base", {}).get("ndcg@10") for h in history]
    vals = [v for v in vals if isinstance(v, int | float)]
    shown = {
        k: options[k]
        for k in ("participants", "partition", "rounds", "dim", "server_lr")
        if k in options
    }
    setting = ", ".join(f"{k}={v}" for k, v in shown.items()) or "simulate defaults"
    note = f"from {source}; " + str(report.get("protocol", "fedrec simulate"))
    test = final.get("federated", {}).get("test")
    if not isinstance(test, dict) or "ndcg@10" not in test:
        return []
    return [
        Row(
            method="federated",
            label="federated (fedrec simulate)",
            setting=setting,
            validation={"ndcg@10": max(vals)} if vals else {},
            test=[{k: float(v) for k, v in test.items() if isinstance(v, int | float)}],
            tune_seconds=float("nan"),
            fit_seconds=float(sum(h.get("seconds", 0.0) for h in history)),
            note=note,
        )
    ]


def run_simulate(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``fedrec simulate`` with its defaults on the same data; return its report."""
    from rich.console import Console

    from fedrec.simulation import SimulationOptions, run_simulation

    with tempfile.TemporaryDirectory(prefix="fedrec-anchors-") as tmp:
        report = Path(tmp) / "report.json"
        options = SimulationOptions(
            dataset=args.dataset,
            data=args.data,
            user_col=args.user_col,
            item_col=args.item_col,
            rating_col=args.strength_col,
            time_col=args.time_col,
            report=report,
        )
        run_simulation(options, Console(stderr=True))
        loaded: dict[str, Any] = json.loads(report.read_text())
        return loaded


# ---------------------------------------------------------------------------- data, output
def load_data(args: argparse.Namespace) -> tuple[str, Interactions]:
    """ML-100K (``u.data``, ratings as strength) or a CSV with named or detected columns."""
    if args.dataset == "ml-100k":
        inter, _ = load_movielens_100k(args.data)
        return "ml-100k", inter
    inter, report = load_csv(
        args.data,
        user_col=args.user_col,
        item_col=args.item_col,
        rating_col=args.strength_col,
        time_col=args.time_col,
    )
    if report.malformed:
        print(f"dropped {report.malformed} malformed rows: {report.dropped}", flush=True)
    return Path(args.data).name, inter


def check_protocol_files(data_dir: Path, proto: Protocol) -> str:
    """Compare the split with ML-100K's shipped ``protocol/`` files, when present."""
    status = []
    for part, target in (("valid", proto.split.valid), ("test", proto.split.test)):
        path = data_dir / "protocol" / f"loo_{part}.tsv"
        if not path.is_file():
            return "protocol/ files absent; split computed from the interactions"
        rows = np.loadtxt(path, dtype=np.int64, ndmin=2)[:, :2]
        ids = np.array(
            [
                [int(proto.full.user_ids[u]), int(proto.full.item_ids[i])]
                for u, i in zip(target.users, target.items, strict=True)
            ]
        ).reshape(-1, 2)
        ok = np.array_equal(ids, rows)
        status.append(f"{part} {'matches' if ok else 'DIFFERS FROM'} protocol/loo_{part}.tsv")
    return "; ".join(status)


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def format_table(rows: list[Row]) -> str:
    """A markdown table: chosen setting, validation and test figures, times, × best anchor."""
    library = [r.test_mean("ndcg@10") for r in rows if r.method in LIBRARY and r.test]
    best = max(library) if library else float("nan")
    head = (
        "| method | chosen on validation | val NDCG@10 | "
        + " | ".join(f"test {label}" for label in LABELS)
        + " | × best library anchor | tune s | final fit s |"
    )
    lines = [head, "|" + "---|" * (len(LABELS) + 6)]
    for r in rows:
        cells = [_cell([m[k] for m in r.test if k in m]) for k in METRICS]
        ratio = r.test_mean("ndcg@10") / best if np.isfinite(best) and r.test else float("nan")
        val = r.validation.get("ndcg@10")
        lines.append(
            f"| {r.label} | {r.setting} | {'—' if val is None else f'{val:.4f}'} | "
            + " | ".join(cells)
            + f" | {'—' if not np.isfinite(ratio) else f'{ratio:.3f}'} | "
            f"{'—' if not np.isfinite(r.tune_seconds) else f'{r.tune_seconds:.0f}'} | "
            f"{r.fit_seconds:.0f} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", choices=("ml-100k", "csv"), default="ml-100k")
    parser.add_argument("--data", type=Path, default=None, help="ML-100K folder or CSV file")
    parser.add_argument("--user-col", default=None)
    parser.add_argument("--item-col", default=None)
    parser.add_argument("--time-col", default=None)
    parser.add_argument(
        "--strength-col",
        default=None,
        help="interaction strength (rating, count, quantity) that ALS may weigh by",
    )
    parser.add_argument(
        "--methods",
        default="popularity,ease,als,bpr,ours",
        help="comma-separated subset of popularity,ease,als,bpr,ours",
    )
    parser.add_argument("--seeds", default="0,1,2", help="final-fit seeds (protocol: 0,1,2)")
    parser.add_argument("--threads", type=int, default=2, help="implicit's threads (≤ 2 here)")
    parser.add_argument("--ours-max-rounds", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="one-point grids, short fits")
    parser.add_argument("--report", type=Path, default=None, help="a fedrec simulate report")
    parser.add_argument(
        "--simulate", action="store_true", help="run fedrec simulate (defaults) for its row"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.data is None:
        if args.dataset == "csv":
            print("--dataset csv needs --data FILE", file=sys.stderr)
            return 2
        args.data = DEFAULT_DATA
    args.data = args.data.resolve()
    if args.dataset == "ml-100k" and not (args.data / "u.data").is_file():
        print(f"MovieLens 100K not found at {args.data}: pass --data DIR", file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if any(m in LIBRARY for m in methods) and not implicit_available():
        print(f"note: {IMPLICIT_MISSING}; skipping those rows", file=sys.stderr, flush=True)
        methods = [m for m in methods if m not in LIBRARY]

    t0 = time.perf_counter()
    name, full = load_data(args)
    proto = Protocol.build(name, full)
    has_strength = bool(np.isfinite(full.ratings).any())
    print(
        f"{name}: {full.num_users} users, {full.num_items} items, {len(full)} interactions; "
        f"{len(proto.split.test)} evaluated users; strength column: "
        f"{'yes' if has_strength else 'no'}",
        flush=True,
    )
    if args.dataset == "ml-100k":
        print(check_protocol_files(args.data, proto), flush=True)
    models = anchors(
        quick=args.quick,
        threads=args.threads,
        has_strength=has_strength,
        ours_max_rounds=args.ours_max_rounds,
    )
    unknown = [m for m in methods if m not in models]
    if unknown:
        print(f"unknown methods {unknown}; choose among {sorted(models)}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[Row] = []
    for method in methods:
        anchor = models[method]
        print(f"{anchor.label}: {len(anchor.grid)} settings ...", flush=True)
        row = run_anchor(anchor, proto, seeds, verbose=True)
        rows.append(row)
        print(
            f"  chose {row.setting}: val NDCG@10 {row.validation['ndcg@10']:.4f}, "
            f"test NDCG@10 {_cell([m['ndcg@10'] for m in row.test])} "
            f"(tune {row.tune_seconds:.0f}s, final fit {row.fit_seconds:.0f}s)",
            flush=True,
        )
    if args.simulate:
        rows += federated_rows(run_simulate(args), "fedrec simulate (run here)")
    elif args.report:
        rows += federated_rows(json.loads(args.report.read_text()), str(args.report))

    print()
    print(
        f"{name}, EVALUATION.md protocol v1 (leave-one-out, full ranking; anchors retrained on "
        f"train+validation, seeds {seeds}); wall time {time.perf_counter() - t0:.0f}s"
    )
    print(format_table(rows))
    for r in rows:
        if r.note:
            print(f"note ({r.label}): {r.note}")
    if args.json:
        payload = {"dataset": name, "protocol": "EVALUATION.md v1", "rows": [vars(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
