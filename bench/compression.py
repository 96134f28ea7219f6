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
    BASE,
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
from participant_sdk.recsys.metrics import evaluate_loo
from participant_sdk.wire import ENCODINGS, decode_model, encode_model, encode_update

# the quality bench's selections (bench/RESULTS.md section 9): (candidate, rounds)
SELECTED = {
    "central": (Candidate(0.12, 1.0), 60),
    "iid-5": (Candidate(0.08, 8.0, FED_NORMALIZATION), 60),
    "skewed-5": (Candidate(0.08, 4.0, FED_NORMALIZATION), 90),
    "per-user": (Candidate(0.08, 100.0, FED_NORMALIZATION, uniform_weights=True), 90),
}


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
    cand, _ = SELECTED[job.setting]
    trainval = data.loo.train_and_valid()
    start = time.perf_counter()
    res = simulate(
        trainval,
        groups_for(_setting(job.setting), trainval),
        config_for(cand, job.seed),
        rounds=job.rounds,
        server_lr=cand.server_lr,
        normalization=cand.normalization,
        server_momentum=cand.server_momentum,
        uniform_weights=cand.uniform_weights,
        lr_decay_per_round=LR_DECAY,
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
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ML-100K directory")
    parser.add_argument("--setting", default="iid-5", choices=sorted(SELECTED))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--rounds", type=int, default=None, help="default: the selection's")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--bytes-only", action="store_true", help="skip the quality fits")
    args = parser.parse_args(argv)
    data_dir = args.data.resolve()
    if not (data_dir / "u.data").is_file():
        print(f"MovieLens 100K not found at {data_dir} (pass --data DIR)", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
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
    if args.bytes_only:
        return 0

    seeds = [int(s) for s in args.seeds.split(",")]
    rounds = args.rounds or SELECTED[args.setting][1]
    jobs = [
        FitJob(data_dir, args.setting, encoding, seed, rounds)
        for seed in seeds
        for encoding in ENCODINGS
    ]
    print(
        f"\n## Quality: {args.setting}, {SELECTED[args.setting][0].label()}, {rounds} rounds, "
        f"seeds {seeds} ({len(jobs)} fits)\n",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {e: [] for e in ENCODINGS}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for out in pool.map(run_fit, jobs):
            job = out["job"]
            results[job.encoding].append(out)
            served = ", ".join(f"{e} {v:.4f}" for e, v in out["served"].items())
            print(
                f"  {job.encoding:8s} seed {job.seed}: test NDCG@10 {out['ndcg']:.4f} "
                f"HR@10 {out['hr']:.4f} ({out['seconds']:.0f}s); its final model served "
                f"in {served}",
                flush=True,
            )
    reference = float(np.mean([r["ndcg"] for r in results["float32"]]))
    print(
        "\n| encoding | test NDCG@10 (per seed) | mean | relative to float32 | HR@10 mean "
        "| MB uploaded / round |"
    )
    print("|---|---|---|---|---|---|")
    for encoding in ENCODINGS:
        runs = sorted(results[encoding], key=lambda r: r["job"].seed)
        mean = float(np.mean([r["ndcg"] for r in runs]))
        per_seed = " / ".join(f"{r['ndcg']:.4f}" for r in runs)
        print(
            f"| {encoding} | {per_seed} | {mean:.4f} | {(mean - reference) / reference:+.2%} "
            f"| {np.mean([r['hr'] for r in runs]):.4f} | {runs[0]['bytes'] / 1e6:.2f} |"
        )
    print("\nThe float32 runs' final models served in each encoding (same model, paired):")
    for encoding in ENCODINGS[1:]:
        runs = results["float32"]
        mean_served = float(np.mean([r["served"][encoding] for r in runs]))
        change = (mean_served - reference) / reference
        print(f"  {encoding}: test NDCG@10 {mean_served:.4f} ({change:+.2%})")
    print(f"\nbase recipe: {BASE}; total wall time {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
