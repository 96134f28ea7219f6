"""Does the default path hold on data nobody tuned for? (issue 9, the generalisation bar)

For each data set of a few different shapes this runs the exact default command a user
would run, ``fedrec simulate --dataset csv --data FILE --user-col user --item-col item
[--rating-col plays] [--time-col ts] --participants 5 --partition iid --seed 0 --report
FILE`` (a subprocess of the installed ``fedrec`` script: no tuning flag), and the
``implicit`` package's ALS and BPR tuned on the same validation split and tested on the
same test split (:mod:`bench.anchors`, EVALUATION.md protocol v1). It prints one row per
data set: federated and centralized test NDCG@10, their ratio, the best library anchor,
the federated/anchor ratio, the wall time of the command and the recipe it chose.

The shapes stand for data the project has never seen and are not ML-100K-tuned:

* ``lastfm-like`` — play counts, no timestamps, more items than users (~1.9k users,
  ~17k items, ~90k interactions): the size the 20-minute limit is stated for;
* ``music-heavy`` — very heavy-tailed play counts, no timestamps, more items than users;
* ``movies-dated`` — rating-like strengths 1-5 with timestamps and drifting taste;
* ``sparse`` — many light users (3-20 items each), binary, with timestamps;
* ``ml-100k-ratings`` / ``ml-100k-third-undated`` — MovieLens 100K as a CSV with the
  rating as strength, and a third of its users without timestamps (when the shared copy
  is there).

Usage (after ``pip install -e '.[bench]'``)::

    nice python -m bench.generalisation                        # every shape, full grids
    nice python -m bench.generalisation --shapes lastfm-like   # some of them
    nice python -m bench.generalisation --small-grid           # the anchors' quick grids
    python -m bench.generalisation --quick                     # tiny shapes, short grids
    nice python -m bench.generalisation --anchors-only --shapes sparse   # no simulate run

Bounded: each simulate run has ``--timeout`` seconds (default 1800), the anchors' grids
and checkpoints are fixed, and ``--quick`` shrinks every shape to a few hundred users.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess  # nosec B404 # runs the installed fedrec script with a fixed argv
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.anchor_models import IMPLICIT_MISSING, anchors, implicit_available
from bench.anchors import Protocol, run_anchor
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys.data import Interactions, load_csv, load_movielens_100k

REPO_ROOT = Path(__file__).resolve().parent.parent
ML100K = Path(os.environ.get("FEDREC_ML100K_DIR", REPO_ROOT / ".." / "shared/datasets/ml-100k"))
LIBRARY = ("als", "bpr")


@dataclass(frozen=True)
class Shape:
    """One data set: how to build it, and which columns the CSV gets."""

    name: str
    build: Callable[[bool], Interactions | None]  # quick -> data (None: unavailable)
    strengths: bool
    timestamps: bool
    about: str


def _synthetic(quick: bool, **kwargs: Any) -> Interactions:
    if quick:  # the same traits, a few hundred users and items
        kwargs["num_users"] = min(kwargs["num_users"], 150)
        kwargs["num_items"] = min(kwargs["num_items"], 300)
    return make_synthetic(seed=0, **kwargs)


def _ml100k(quick: bool, third_undated: bool = False) -> Interactions | None:
    if not (ML100K / "u.data").is_file():
        return None
    data, _ = load_movielens_100k(ML100K / "u.data")
    if third_undated or quick:
        rng = np.random.default_rng(0)
        size = 60 if quick else data.num_users // 3
        keep = rng.choice(data.num_users, size=size, replace=False)
        data = data.subset(np.isin(data.users, keep))
    if third_undated:
        data = Interactions(
            users=data.users,
            items=data.items,
            timestamps=np.full(len(data), np.nan),
            ratings=data.ratings,
            user_ids=data.user_ids,
            item_ids=data.item_ids,
        )
    return data


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape(
            "lastfm-like",
            lambda q: _synthetic(
                q,
                num_users=1900,
                num_items=20_000,
                rank=8,
                interactions_per_user=(40, 50),
                activity_sigma=0.2,
                popularity_exponent=0.7,
                strength_mean=30.0,
                strength_dispersion=0.4,
                timestamps=False,
            ),
            True,
            False,
            "play counts, no timestamps, items >> users (the 20-minute size)",
        ),
        Shape(
            "music-heavy",
            lambda q: _synthetic(
                q,
                num_users=2000,
                num_items=6000,
                rank=6,
                interactions_per_user=(5, 200),
                strength_mean=50.0,
                strength_dispersion=0.2,
                timestamps=False,
            ),
            True,
            False,
            "very heavy-tailed counts, no timestamps, items > users",
        ),
        Shape(
            "movies-dated",
            lambda q: _synthetic(
                q,
                num_users=2000,
                num_items=2500,
                rank=6,
                interactions_per_user=(10, 200),
                popularity_exponent=1.1,
                strength_mean=3.0,
                strength_dispersion=2.0,
                drift=0.8,
            ),
            True,
            True,
            "rating-like strengths, timestamps, taste drift",
        ),
        Shape(
            "sparse",
            lambda q: _synthetic(
                q,
                num_users=6000,
                num_items=3000,
                interactions_per_user=(3, 20),
                strengths=False,
            ),
            False,
            True,
            "many light users (3-20 items), binary, timestamps",
        ),
        Shape(
            "ml-100k-ratings",
            lambda q: _ml100k(q),
            True,
            True,
            "MovieLens 100K as a CSV, rating as strength",
        ),
        Shape(
            "ml-100k-third-undated",
            lambda q: _ml100k(q, third_undated=True),
            True,
            False,
            "a third of MovieLens 100K's users, no timestamps",
        ),
    )
}


def write_csv(data: Interactions, path: Path, *, strengths: bool, timestamps: bool) -> None:
    """The interactions as a CSV with a header: user, item[, plays][, ts]."""
    header = ["user", "item"] + (["plays"] if strengths else []) + (["ts"] if timestamps else [])
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for k in range(len(data)):
            row: list[Any] = [data.user_ids[data.users[k]], data.item_ids[data.items[k]]]
            if strengths:
                row.append(f"{data.ratings[k]:g}")
            if timestamps:
                row.append(f"{data.timestamps[k]:.0f}")
            writer.writerow(row)


def csv_columns(shape: Shape) -> dict[str, str | None]:
    """The column names a shape's CSV gets, as ``load_csv``'s keyword arguments."""
    return {
        "user_col": "user",
        "item_col": "item",
        "rating_col": "plays" if shape.strengths else None,
        "time_col": "ts" if shape.timestamps else None,
    }


def load_shape(
    shape: Shape, workdir: Path, *, quick: bool = False, max_users: int | None = None
) -> tuple[Interactions, Path] | None:
    """The shape's data as ``fedrec simulate --dataset csv`` reads it: written to
    ``workdir/NAME.csv`` and loaded back (the same ids and order, hence the same split).
    ``max_users`` keeps that many of its users, drawn with seed 0, with all their
    interactions (a smaller federation of the same shape). None: not available here."""
    data = shape.build(quick)
    if data is None:
        return None
    if max_users is not None and max_users < data.num_users:
        keep = np.random.default_rng(0).choice(data.num_users, size=max_users, replace=False)
        data = data.subset(np.isin(data.users, keep))
    csv_path = workdir / f"{shape.name}.csv"
    write_csv(data, csv_path, strengths=shape.strengths, timestamps=shape.timestamps)
    columns = csv_columns(shape)
    loaded, _ = load_csv(
        csv_path,
        user_col=columns["user_col"],
        item_col=columns["item_col"],
        rating_col=columns["rating_col"],
        time_col=columns["time_col"],
    )
    return loaded, csv_path


def simulate_command(csv_path: Path, report: Path, shape: Shape) -> list[str]:
    """The exact default command of the bar: data path and column names, nothing else."""
    script = Path(sys.executable).parent / "fedrec"
    command = [str(script), "simulate", "--dataset", "csv", "--data", str(csv_path)]
    command += ["--user-col", "user", "--item-col", "item"]
    if shape.strengths:
        command += ["--rating-col", "plays"]
    if shape.timestamps:
        command += ["--time-col", "ts"]
    return (
        command
        + ["--participants", "5", "--partition", "iid", "--seed", "0"]
        + [
            "--report",
            str(report),
        ]
    )


@dataclass
class Outcome:
    """One data set's row."""

    shape: str
    size: str
    federated: float = float("nan")
    centralized: float = float("nan")
    popularity: float = float("nan")
    seconds: float = float("nan")
    chosen: str = "—"
    anchors: dict[str, float] = field(default_factory=dict)
    anchor_settings: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def best_anchor(self) -> tuple[str, float]:
        if not self.anchors:
            return "—", float("nan")
        name = max(self.anchors, key=lambda k: self.anchors[k])
        return name, self.anchors[name]


def _chosen(report: dict[str, Any]) -> str:
    options = report.get("options", {})
    selection = report.get("selection") or {}
    model = options.get("model", "?")
    shown = f"{selection.get('chosen', model)}: dim {options.get('dim')}"
    if model == "ials":
        shown += f", reg {options.get('reg')}, alpha {options.get('alpha')}"
    elif model == "bpr":
        shown += f", lr {options.get('learning_rate')}, epochs {options.get('local_epochs')}"
    elif model == "ease":
        shown = f"ease (lambdas {options.get('ease_lambdas')})"
    federated = report.get("final", {}).get("federated", {})
    rounds = federated.get("rounds_trained")
    if rounds is not None and model != "ease":
        shown += f"; {rounds} rounds (best {federated.get('chosen_round')})"
    return shown


def _run_simulate(
    shape: Shape, csv_path: Path, workdir: Path, timeout: float, outcome: Outcome
) -> None:
    """The bar's default command on the shape's CSV; its figures go into ``outcome``."""
    report_path = workdir / f"{shape.name}.report.json"
    command = simulate_command(csv_path, report_path, shape)
    print("$ " + " ".join(command), flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(  # nosec B603 # fixed argv: our own script on our own file
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        outcome.error = f"simulate timed out after {timeout:.0f} s"
    else:
        outcome.seconds = time.perf_counter() - started
        (workdir / f"{shape.name}.simulate.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            outcome.error = f"simulate exited {done.returncode}: {done.stderr.strip()[-300:]}"
        else:
            report = json.loads(report_path.read_text())
            final = report["final"]
            outcome.federated = final["federated"]["test"]["ndcg@10"]
            outcome.centralized = final["centralized"]["test"]["ndcg@10"]
            outcome.popularity = final["popularity"]["test"]["ndcg@10"]
            outcome.chosen = _chosen(report)
    print(
        f"simulate: federated {outcome.federated:.4f}, centralized {outcome.centralized:.4f}, "
        f"{outcome.seconds:.0f} s, {outcome.chosen} {outcome.error}",
        flush=True,
    )


def run_shape(
    shape: Shape,
    *,
    quick: bool,
    small_grid: bool,
    timeout: float,
    workdir: Path,
    anchors_only: bool = False,
) -> Outcome | None:
    """The default simulate command and the anchors on one data set (only the anchors
    with ``anchors_only``: a shape's simulate figures do not depend on the anchors' grid)."""
    found = load_shape(shape, workdir, quick=quick)
    if found is None:
        print(f"{shape.name}: data not available here, skipped", flush=True)
        return None
    # the anchors read the file back as the simulation does: the same ids, the same split
    loaded, csv_path = found
    size = f"{loaded.num_users} u, {loaded.num_items} i, {len(loaded)} x"
    print(f"\n== {shape.name} ({shape.about}): {size}", flush=True)
    outcome = Outcome(shape.name, size)
    if not anchors_only:
        _run_simulate(shape, csv_path, workdir, timeout, outcome)
    if implicit_available():
        proto = Protocol.build(shape.name, loaded)
        models = anchors(quick=quick or small_grid, threads=2, has_strength=shape.strengths)
        for name in LIBRARY:
            row = run_anchor(models[name], proto, [0])
            outcome.anchors[name] = row.test_mean("ndcg@10")
            outcome.anchor_settings[name] = row.setting
            print(
                f"implicit {name}: {outcome.anchors[name]:.4f} ({row.setting}; "
                f"tune {row.tune_seconds:.0f} s)",
                flush=True,
            )
    else:
        print(f"note: {IMPLICIT_MISSING}", flush=True)
    return outcome


def format_table(outcomes: list[Outcome]) -> str:
    """A markdown table, one row per data set."""
    lines = [
        "| data | size | federated | centralized | × central | best anchor | × anchor | "
        "popularity | simulate wall | chosen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        name, best = o.best_anchor
        ratio = o.federated / o.centralized if o.centralized > 0 else float("nan")
        vs_anchor = o.federated / best if best > 0 else float("nan")
        wall = f"{o.seconds / 60:.1f} min" if np.isfinite(o.seconds) else "—"
        anchor = f"{best:.4f} ({name})" if np.isfinite(best) else "—"
        chosen = o.chosen + (f" ({o.error})" if o.error else "")
        lines.append(
            f"| {o.shape} | {o.size} | {o.federated:.4f} | {o.centralized:.4f} | {ratio:.3f} | "
            f"{anchor} | {vs_anchor:.3f} | {o.popularity:.4f} | {wall} | {chosen} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, short grids")
    parser.add_argument(
        "--small-grid",
        action="store_true",
        help="the anchors' quick grids on full-size shapes (a loaded machine)",
    )
    parser.add_argument(
        "--anchors-only",
        action="store_true",
        help="skip the simulate command: only the library anchors, on the same split",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per simulate run, s")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--keep", type=Path, default=None, help="keep CSVs and reports here")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        print(f"unknown shapes {unknown}; choose among {list(SHAPES)}", file=sys.stderr)
        return 2
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="fedrec-generalisation-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in names:
            found = run_shape(
                SHAPES[name],
                quick=args.quick,
                small_grid=args.small_grid,
                timeout=args.timeout,
                workdir=workdir,
                anchors_only=args.anchors_only,
            )
            if found is not None:
                outcomes.append(found)
    print()
    print(format_table(outcomes))
    if args.json:
        args.json.write_text(json.dumps([vars(o) for o in outcomes], indent=2, default=str))
    return 0 if all(not o.error for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
