"""Compressed transport (``transport.encoding``): bytes per round and the quality cost.

Two parts, each encoding against float32 side by side in one run:

1. **Bytes per round** of ML-100K federations (the quality bench's recipe, dim 128, 1,682
   items): one round of the in-process federation per setting, the uploads' real
   payload sizes (row-sparse updates) and the model download of each participant; and a
   dense P = 10^7 model (one download and one dense upload).
2. **Quality** on ML-100K (protocol v1, leave-one-out test NDCG@10): the quality bench's
   selected recipe for a setting (section 9 of bench/RESULTS.md; iid-5 by default),
   trained with every participant downloading the model and uploading its deltas in
   the encoding (``fedrec.inprocess.simulate(encoding=...)``, the product's codec), the
   same seeds for every encoding; the relative change of the mean against float32.

Usage::

    nice -n 10 python -m bench.compression [--data DIR] [--seeds 0,1,2] [--jobs 2]
        [--setting iid-5] [--rounds 60] [--bytes-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import (
    DEFAULT_DATA,
    FED_NORMALIZATION,
    LR_DECAY,
    SETTINGS,
    Candidate,
    config_for,
    groups_for,
    load,
)
from fedrec.inprocess import simulate
from fedrec.options import SimulationOptions
from participant_sdk.recsys import BPRConfig
from participant_sdk.recsys.metrics import evaluate_loo
from participant_sdk.wire import ENCODINGS, decode_model, encode_model, encode_update

# the quality bench's selections (bench/RESULTS.md section 9): (candidate, rounds)
SELECTED = {
    "central": (Candidate(0.12, 1.0), 60),
    "iid-5": (Candidate(0.08, 8.0, FED_NORMALIZATION), 60),
    "skewed-5": (Candidate(0.08, 4.0, FED_NORMALIZATION), 90),
    "per-user": (Candidate(0.08, 100.0, FED_NORMALIZATION, uniform_weights=True), 90),
}
# `fedrec simulate`'s default BPR path on 5 IID silos (dim 64, lr 0.05, 8 local epochs,
# server_lr 2, touched rows, no learning-rate decay), at a fixed 20 rounds: the default
# command's federations stop after ~22-26 rounds and deploy version ~16-20. Each fit costs
# ~1/6 of the 60-round dim-128 recipe, so a paired design affords ~6 x the seeds.
DEFAULT_PATH = "iid-5-default"
DEFAULT_PATH_ROUNDS = 20


def _recipe(setting: str, seed: int) -> tuple[BPRConfig, Candidate, float]:
    """(trainer config, server settings, per-round lr decay) of a setting: the quality
    bench's selection, or the simulate command's defaults for ``DEFAULT_PATH``."""
    if setting == DEFAULT_PATH:
        options = SimulationOptions(seed=seed)
        server = Candidate(options.learning_rate, options.server_lr or 1.0, options.normalization)
        return options.bpr_config(), server, 1.0
    cand, _ = SELECTED[setting]
    return config_for(cand, seed), cand, LR_DECAY


def _rounds(setting: str) -> int:
    return DEFAULT_PATH_ROUNDS if setting == DEFAULT_PATH else SELECTED[setting][1]


def _label(setting: str) -> str:
    if setting == DEFAULT_PATH:
        return f"simulate's defaults ({SimulationOptions().bpr_config()}, server_lr 2, touched)"
    return SELECTED[setting][0].label()


def _setting(name: str) -> Any:
    return next(s for s in SETTINGS if s.name == name)


def bytes_per_round(data_dir: Path, settings: list[str]) -> list[tuple[str, str, int, int]]:
    """(setting, encoding, upload bytes, download bytes) of one real round."""
    data = load(data_dir)
    train = data.loo.train
    rows: list[tuple[str, str, int, int]] = []
    for name in settings:
        cand, _ = SELECTED[name]
        groups = groups_for(_setting(name), train)
        for encoding in ENCODINGS:
            res = simulate(
                train,
                groups,
                config_for(cand, 0),
                rounds=1,
                server_lr=cand.server_lr,
                normalization=cand.normalization,
                uniform_weights=cand.uniform_weights,
                encoding=encoding,
            )
            model = len(encode_model(res.item_tensors, encoding, {"kind": "model"}))
            rows.append((name, encoding, res.bytes_per_round[0], model * len(groups)))
    return rows


def large_model_bytes(num_items: int = 78_125, dim: int = 128) -> list[tuple[str, int, int]]:
    """(encoding, model download, dense update upload) of a P = num_items x (dim + 1)
    model (10^7 by default) filled with Gaussian values."""
    rng = np.random.default_rng(0)
    tensors = {
        "item_factors": rng.standard_normal((num_items, dim), dtype=np.float32),
        "item_bias": rng.standard_normal(num_items, dtype=np.float32),
    }
    out: list[tuple[str, int, int]] = []
    for encoding in ENCODINGS:
        model = len(encode_model(tensors, encoding, {"kind": "model"}))
        update = len(
            encode_update(tensors, round=1, base_version=0, num_examples=1, encoding=encoding)
        )
        out.append((encoding, model, update))
    return out


@dataclass(frozen=True)
class FitJob:
    data_dir: Path
    setting: str
    encoding: str
    seed: int
    rounds: int


def run_fit(job: FitJob) -> dict[str, Any]:
    """One final fit on Tr_u ∪ {v_u} in ``job.encoding``: test NDCG@10 and HR@10."""
    data = load(job.data_dir)
    config, cand, lr_decay = _recipe(job.setting, job.seed)
    trainval = data.loo.train_and_valid()
    # the default path's silos are iid-5's (partition seed 0); only training's seed varies
    silos = "iid-5" if job.setting == DEFAULT_PATH else job.setting
    groups = groups_for(_setting(silos), trainval)
    start, cpu_start = time.perf_counter(), time.process_time()
    res = simulate(
        trainval,
        groups,
        config,
        rounds=job.rounds,
        server_lr=cand.server_lr,
        normalization=cand.normalization,
        server_momentum=cand.server_momentum,
        uniform_weights=cand.uniform_weights,
        lr_decay_per_round=lr_decay,
        encoding=job.encoding,
    )
    metrics = evaluate_loo(res.score, trainval, data.loo.test)
    # paired and free of training's chaos: the same final model served in each encoding
    served = {
        encoding: evaluate_loo(
            dataclasses.replace(
                res,
                item_tensors=decode_model(
                    encode_model(res.item_tensors, encoding, {"kind": "model"}), encoding
                ),
            ).score,
            trainval,
            data.loo.test,
        )["ndcg@10"]
        for encoding in ENCODINGS
        if encoding != "float32"
    }
    return {
        "job": job,
        "ndcg": metrics["ndcg@10"],
        "served": served,
        "hr": metrics["hr@10"],
        "bytes": float(np.mean(res.bytes_per_round)),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
    }


def fit_encodings(spec: str) -> list[str]:
    """The encodings to fit, float32 first (every relative figure is against it); a
    subset saves a fit per seed when only one encoding's cost is in question."""
    asked = [e.strip() for e in spec.split(",") if e.strip()]
    unknown = sorted(set(asked) - set(ENCODINGS))
    if unknown:
        raise ValueError(f"unknown encoding(s) {unknown}; choose from {list(ENCODINGS)}")
    return [e for e in ENCODINGS if e == "float32" or e in asked]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ML-100K directory")
    parser.add_argument("--setting", default="iid-5", choices=sorted([*SELECTED, DEFAULT_PATH]))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--rounds", type=int, default=None, help="default: the selection's")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--encodings",
        default=",".join(ENCODINGS),
        help="comma-separated encodings to fit (float32 is always fitted: the reference)",
    )
    parser.add_argument("--bytes-only", action="store_true", help="skip the quality fits")
    parser.add_argument("--quality-only", action="store_true", help="skip the bytes tables")
    args = parser.parse_args(argv)
    data_dir = args.data.resolve()
    if not (data_dir / "u.data").is_file():
        print(f"MovieLens 100K not found at {data_dir} (pass --data DIR)", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    if not args.quality_only:
        print_bytes(data_dir)
    if args.bytes_only:
        return 0
    return print_quality(args, data_dir, t0)


def print_bytes(data_dir: Path) -> None:
    """The bytes tables: one real round per setting, and a P = 10^7 model."""
    print("## Bytes per round (one round, real payloads)\n")
    print(
        "| setting | participants | encoding | uploads / round | downloads / round | total "
        "| × float32 |"
    )
    print("|---|---|---|---|---|---|---|")
    table = bytes_per_round(data_dir, ["iid-5", "per-user"])
    for name, encoding, up, down in table:
        base = next(u + d for n, e, u, d in table if n == name and e == "float32")
        participants = len(groups_for(_setting(name), load(data_dir).loo.train))
        print(
            f"| {name} | {participants} | {encoding} | {up / 1e6:.3f} MB | {down / 1e6:.3f} MB "
            f"| {(up + down) / 1e6:.3f} MB | {(up + down) / base:.3f} |"
        )
    print("\n| model | encoding | download | dense update | × float32 |")
    print("|---|---|---|---|---|")
    large = large_model_bytes()
    for encoding, model, update in large:
        print(
            f"| P = 10^7 | {encoding} | {model / 1e6:.1f} MB | {update / 1e6:.1f} MB "
            f"| {model / large[0][1]:.3f} |"
        )


def paired_change(reference: dict[int, float], other: dict[int, float]) -> tuple[float, float]:
    """Mean and standard error of the per-seed relative change ``other / reference - 1``
    over the seeds both have: the paired figure, free of the seeds' own spread."""
    changes = [other[s] / reference[s] - 1.0 for s in sorted(set(reference) & set(other))]
    if not changes:
        return float("nan"), float("nan")
    sem = float(np.std(changes, ddof=1) / np.sqrt(len(changes))) if len(changes) > 1 else 0.0
    return float(np.mean(changes)), sem


def print_quality(args: argparse.Namespace, data_dir: Path, t0: float) -> int:
    """Fit every seed in every asked encoding and print the quality tables."""
    seeds = [int(s) for s in args.seeds.split(",")]
    encodings = fit_encodings(args.encodings)
    rounds = args.rounds or _rounds(args.setting)
    jobs = [
        FitJob(data_dir, args.setting, encoding, seed, rounds)
        for seed in seeds
        for encoding in encodings
    ]
    print(
        f"\n## Quality: {args.setting}, {_label(args.setting)}, {rounds} rounds, "
        f"seeds {seeds} ({len(jobs)} fits)\n",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {e: [] for e in encodings}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for out in pool.map(run_fit, jobs):
            job = out["job"]
            results[job.encoding].append(out)
            served = ", ".join(f"{e} {v:.4f}" for e, v in out["served"].items())
            print(
                f"  {job.encoding:8s} seed {job.seed}: test NDCG@10 {out['ndcg']:.4f} "
                f"HR@10 {out['hr']:.4f} ({out['seconds']:.0f} s wall, "
                f"{out['cpu_seconds']:.0f} s CPU); its final model served "
                f"in {served}",
                flush=True,
            )
    reference = float(np.mean([r["ndcg"] for r in results["float32"]]))
    print(
        "\n| encoding | test NDCG@10 (per seed) | mean | relative to float32 "
        "| per-seed change (mean ± s.e.) | HR@10 mean | MB uploaded / round |"
    )
    print("|---|---|---|---|---|---|---|")
    by_seed = {e: {r["job"].seed: r["ndcg"] for r in results[e]} for e in encodings}
    for encoding in encodings:
        runs = sorted(results[encoding], key=lambda r: r["job"].seed)
        mean = float(np.mean([r["ndcg"] for r in runs]))
        per_seed = " / ".join(f"{r['ndcg']:.4f}" for r in runs)
        change, sem = paired_change(by_seed["float32"], by_seed[encoding])
        print(
            f"| {encoding} | {per_seed} | {mean:.4f} | {(mean - reference) / reference:+.2%} "
            f"| {change:+.2%} ± {sem:.2%} | {np.mean([r['hr'] for r in runs]):.4f} "
            f"| {runs[0]['bytes'] / 1e6:.2f} |"
        )
    print("\nThe float32 runs' final models served in each encoding (same model, paired):")
    for encoding in ENCODINGS[1:]:
        runs = results["float32"]
        mean_served = float(np.mean([r["served"][encoding] for r in runs]))
        change = (mean_served - reference) / reference
        print(f"  {encoding}: test NDCG@10 {mean_served:.4f} ({change:+.2%})")
    config, _, _ = _recipe(args.setting, seeds[0])
    print(f"\nrecipe: {config}; total wall time {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
