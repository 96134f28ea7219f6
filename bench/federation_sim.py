"""The quality cost of differential privacy on the per-user federation.

``python -m bench.federation_sim --data DIR`` runs the quality benchmark's per-user
recipe (:mod:`bench.quality`) in the in-process federation (:mod:`fedrec.inprocess`)
without DP, then with DP-FedAvg at each noise multiplier (bench/RESULTS.md,
"Differential privacy (per-user)").
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.quality import BASE, DEFAULT_DATA, LR_DECAY, load
from fedrec.inprocess import FedResult, epsilon_spent, simulate
from fedrec.sampled_dp import pld_epsilon
from participant_sdk.recsys.metrics import evaluate_loo


def dp_quality(data_dir: Path, *, rounds: int, noises: Sequence[float], seed: int = 0) -> dict:
    """Test NDCG@10 of the per-user federation without DP, then with DP at each noise.

    The quality benchmark's per-user recipe (``bench.quality``: BASE, lr 0.08 x0.96 per
    round, server_lr 100, total, uniform), fitted on train + validation and scored on
    the leave-one-out test items. The clip norm C is the median global L2 norm of the
    updates of the run without DP (all rounds, all users); z = 0 then shows the cost of
    clipping alone.
    """
    data = load(data_dir)
    trainval = data.loo.train_and_valid()
    groups = [np.array([u], dtype=np.int64) for u in range(trainval.num_users)]
    config = BASE.replace(learning_rate=0.08, seed=seed)

    def run(**dp: float) -> tuple[FedResult, dict[str, float]]:
        res = simulate(
            trainval,
            groups,
            config,
            rounds=rounds,
            server_lr=100.0,
            normalization="total",
            uniform_weights=True,
            lr_decay_per_round=LR_DECAY,
            **dp,  # type: ignore[arg-type]
        )
        metrics = evaluate_loo(res.score, trainval, data.loo.test)
        print(f"  {dp or 'no DP'}: test ndcg@10 {metrics['ndcg@10']:.4f} ({res.seconds:.0f} s)")
        return res, metrics

    plain, metrics = run()
    all_norms = np.concatenate([np.asarray(n) for n in plain.update_norms])
    per_round = [float(np.median(n)) for n in plain.update_norms]
    clip = float(np.median(all_norms))
    print(f"  update norms: median {clip:.4g}, per-round medians {per_round[0]:.4g} (round 1)")
    print(f"  .. {per_round[-1]:.4g} (round {rounds}); C = {clip:.4g}")
    no_dp = {"noise_multiplier": None, "clip_norm": None, "epsilon": None, "epsilon_rdp": None}
    rows: list[dict] = [{**no_dp, **metrics}]
    for z in noises:
        _res, metrics = run(dp_clip=clip, dp_noise=z)
        # "epsilon" is what the coordinator reports and signs (PLD, every user in every
        # round); "epsilon_rdp" the looser RDP bound the earlier figures quoted.
        epsilon = pld_epsilon(z, 1.0, rounds, 1e-5) if z > 0 else np.inf
        epsilon_rdp = epsilon_spent(z, rounds, 1e-5)
        rows.append(
            {
                "noise_multiplier": z,
                "clip_norm": clip,
                "epsilon": epsilon if np.isfinite(epsilon) else None,
                "epsilon_rdp": epsilon_rdp if np.isfinite(epsilon_rdp) else None,
                **metrics,
            }
        )
    return {
        "rounds": rounds,
        "seed": seed,
        "delta": 1e-5,
        "participants": len(groups),
        "median_update_norm_per_round": per_round,
        "update_norm_quartiles": [float(q) for q in np.quantile(all_norms, [0.25, 0.5, 0.75])],
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="quality cost of DP on the per-user federation")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--noises", default="0,0.5,1.0", help="noise multipliers with DP")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    figures = dp_quality(
        args.data, rounds=args.rounds, noises=[float(z) for z in args.noises.split(",")]
    )
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
