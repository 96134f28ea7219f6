"""The privacy frontier: test NDCG@10 against epsilon, with client sampling, in-process.

For each population — (a) per-user ML-100K (943 participants) and (b) a synthetic
population of 20,000 users from :func:`fedrec.synthetic.make_synthetic` — and each target
epsilon in {1, 4, 8, inf} at delta = 1e-5, every candidate (sampling rate q, rounds T,
clip norm C) gets the noise multiplier z whose PLD epsilon (the coordinator's reported
accountant, ``coordinator.domain.accountant.pld_epsilon``) after T Poisson-sampled rounds
is the target, and trains one federation on ``Tr_u`` (:func:`fedrec.sampled_dp.simulate_sampled`:
only the sampled users train each round, DP-FedAvg with the sum divided by the expected
cohort q N). The candidate with the best validation NDCG@10 is then retrained on
``Tr_u ∪ {v_u}`` and scored once on the test items (EVALUATION.md protocol v1, leave-one-
out, full ranking, training seed 0); a grid of one candidate has nothing to choose and
only that test run. epsilon = inf is the non-private reference (``references``: no
clipping, no noise).

**How C is chosen, and what is not accounted.** ML-100K: C is one of the candidates'
values, chosen on validation together with q and T; that selection (2 candidates) reads
the private validation items and is not accounted, as in most DP-FL papers (Papernot &
Steinke, ICLR 2022, bound the cost of such tuning: a small multiple of epsilon for a
handful of candidates). Synthetic: C = 0.5 was fixed before the run from a pilot on a
separate population of the same generator (5,000 users, its own draw): 61 % of the
pilot's updates exceeded it, i.e. C sits a little below the median update norm. The
server step is ``server_lr * (sum + noise) / (q N)``, so the noise on the model is
``server_lr z C / (q N)`` per coordinate: large cohorts are what makes DP pay.

The third synthetic run ("re-chosen step") takes its candidates from ``--pilot``
(``PILOTS``: 20,000 users of the generator's own draw ``data_seed`` 1, validation only):
clipping shrinks the mean update, so the server step has to be chosen under clipping
(C x server_lr), and adaptive clipping (Andrew et al. 2021; its count's noise is paid
out of z, so the PLD epsilon of z is still the one reported) keeps C near the median
update norm as the norms shrink with the local lr. The candidates per epsilon are a
selection on private validation items and are not accounted either (Papernot & Steinke).

Usage (bounded: prints progress; a 20,000-user federation of 10 rounds at q 0.125 is
about 30 s of CPU, several minutes of wall time when the 2 cores are shared)::

    nice python -m bench.privacy_frontier [--data DIR] [--jobs 2] [--json out.json]
    nice python -m bench.privacy_frontier --pilot --only "pilot clip" --epsilons 8,inf
    python -m bench.privacy_frontier --quick          # seconds: a tiny synthetic population
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import DEFAULT_DATA
from fedrec.sampled_dp import (
    AdaptiveClipping,
    SampledDP,
    noise_for_epsilon,
    per_user_views,
    pld_epsilon,
    simulate_sampled,
)
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys.data import load_movielens_100k
from participant_sdk.recsys.metrics import evaluate_loo
from participant_sdk.recsys.model import BPRConfig
from participant_sdk.recsys.splits import LeaveOneOutSplit, leave_one_out

DELTA = 1e-5
EPSILONS = (1.0, 4.0, 8.0, math.inf)
# local training: 32 factors, 2 local epochs per round, 3 negatives per positive; the
# local lr decays x0.95 per round. Chosen once, without DP, on the synthetic validation.
CONFIG = BPRConfig(
    dim=32,
    learning_rate=0.05,
    reg=0.01,
    negatives=3,
    epochs=2,
    batch_size=256,
    init_scale=0.1,
)
LR_DECAY = 0.95
# after the last round each participant fits its own factor to the final model (local,
# no privacy cost); users never sampled start from their initial factor
REFIT_EPOCHS = 3


@dataclass(frozen=True)
class Candidate:
    """One federation's recipe (z follows from epsilon): sampling rate, rounds, clip norm
    and the server step ``server_lr * (sum + noise) / (q N)`` (constant across cohorts);
    optionally a server optimizer of the coordinator (``fedavgm`` with ``momentum``),
    adaptive clipping towards ``target_quantile`` (``clip_norm`` is then the first C) and
    another number of factors."""

    sampling_rate: float
    rounds: int
    clip_norm: float
    server_lr: float = 250.0
    optimizer: str = "fedavg"
    momentum: float = 0.0
    target_quantile: float | None = None
    dim: int = 32

    def label(self, private: bool = True) -> str:
        parts = [f"q={self.sampling_rate:g}", f"T={self.rounds}"]
        if private:
            adaptive = self.target_quantile is not None
            parts.append(
                f"C0={self.clip_norm:g} adaptive γ={self.target_quantile:g}"
                if adaptive
                else f"C={self.clip_norm:g}"
            )
        parts.append(f"lr={self.server_lr:g}")
        if self.optimizer != "fedavg":
            parts.append(f"{self.optimizer} β={self.momentum:g}")
        if self.dim != CONFIG.dim:
            parts.append(f"dim={self.dim}")
        return ", ".join(parts)

    def strategy(self) -> dict[str, Any]:
        """The coordinator ``StrategySpec`` fields of the server step."""
        settings: dict[str, Any] = {"name": self.optimizer, "server_lr": self.server_lr}
        if self.optimizer == "fedavgm":
            settings["server_momentum"] = self.momentum
        return settings

    def adaptive_clipping(self) -> AdaptiveClipping | None:
        if self.target_quantile is None:
            return None
        return AdaptiveClipping(target_quantile=self.target_quantile)


@dataclass(frozen=True)
class Population:
    """A population of one-user participants and its candidate grids: ``candidates`` for
    every finite epsilon, ``references`` (their clip norm unused) for epsilon = inf.
    ``data_seed`` draws the synthetic population (the pilots use their own draw)."""

    name: str
    candidates: tuple[Candidate, ...]
    references: tuple[Candidate, ...]
    synthetic_users: int = 0  # 0: ML-100K from --data
    synthetic_items: int = 0
    data_seed: int = 0
    # epsilon < 8 runs only the first this many candidates (0: all)
    low_epsilon_candidates: int = 0

    def grid(self, epsilon: float) -> tuple[Candidate, ...]:
        if not math.isfinite(epsilon):
            return self.references
        if epsilon < 8 and self.low_epsilon_candidates:
            return self.candidates[: self.low_epsilon_candidates]
        return self.candidates


# Grids are small because each federation costs q N T local trainings plus N local refits
# (~2 ms each): at 20,000 users, q = 0.25 and T = 5 is 25,000 trainings. At a fixed cost
# q T, a larger cohort with fewer rounds buys the better noise-to-signal ratio (q N / z
# per round).
FULL = (
    Population(
        "synthetic 20k users",
        candidates=(Candidate(0.25, 5, 0.5, server_lr=100.0),),
        references=(Candidate(0.25, 5, 0.0, server_lr=100.0),),
        synthetic_users=20_000,
        synthetic_items=1_000,
    ),
    # run after seeing the first synthetic population's test figures (5 rounds left the
    # non-private model barely above popularity): twice the rounds at the same cost
    Population(
        "synthetic 20k users, 10 rounds",
        candidates=(Candidate(0.125, 10, 0.5),),
        references=(Candidate(0.125, 10, 0.0),),
        synthetic_users=20_000,
        synthetic_items=1_000,
    ),
    # third run, after the pilots (own draw, validation only): the server step re-chosen
    # under clipping and adaptive clipping. epsilon 8 and inf choose between the pilot's
    # two best; epsilon 4 and 1 (fewer federations on a loaded machine) take the best one
    Population(
        "synthetic 20k users, re-chosen step",
        candidates=(
            Candidate(0.125, 10, 0.5, server_lr=500.0, target_quantile=0.5),
            Candidate(0.125, 10, 1.0, server_lr=250.0),
        ),
        references=tuple(Candidate(0.125, 10, 0.0, server_lr=lr) for lr in (250.0, 500.0)),
        synthetic_users=20_000,
        synthetic_items=1_000,
        low_epsilon_candidates=1,
    ),
    Population(
        "ml-100k per-user",
        candidates=(Candidate(1.0, 5, 0.5, server_lr=100.0), Candidate(0.5, 10, 0.5, 100.0)),
        references=(Candidate(1.0, 10, 0.0, server_lr=100.0),),
    ),
)

# The pilots: the same generator, its own draw (data_seed 1), validation only
# (``--pilot``), to narrow the grids of the protocol runs above.
PILOT_USERS, PILOT_ITEMS = 20_000, 1_000
PILOTS = (
    # the server step re-chosen under clipping: C x server_lr (the largest step a clipped
    # update can take, and the noise's scale) in {250, 500} for each C (the first run's
    # recipe, C 0.5 and server_lr 250, had 125); the coordinator caps server_lr at 1000
    Population(
        "pilot clip x step",
        candidates=tuple(
            Candidate(0.125, 10, clip, server_lr=step / clip)
            for clip in (0.5, 1.0, 2.0, 0.25)
            for step in (250.0, 500.0)
            if step / clip <= 1000
        ),
        references=tuple(Candidate(0.125, 10, 0.0, server_lr=lr) for lr in (250.0, 500.0)),
        synthetic_users=PILOT_USERS,
        synthetic_items=PILOT_ITEMS,
        data_seed=1,
    ),
    # the other levers, each beside the first pilot's early leader (C 0.5, server_lr 500):
    # adaptive clipping towards the median and the 0.8 quantile, fewer factors, server
    # momentum (half the step: momentum 0.5 doubles a steady one), a cohort twice as large
    Population(
        "pilot levers",
        candidates=(
            Candidate(0.125, 10, 0.5, server_lr=500.0, target_quantile=0.5),
            Candidate(0.125, 10, 0.5, server_lr=500.0, target_quantile=0.8),
            Candidate(0.125, 10, 0.5, server_lr=500.0, dim=16),
            Candidate(0.125, 10, 0.5, server_lr=250.0, optimizer="fedavgm", momentum=0.5),
            Candidate(0.25, 10, 0.5, server_lr=500.0),
        ),
        references=(Candidate(0.125, 10, 0.0, server_lr=500.0, dim=16),),
        synthetic_users=PILOT_USERS,
        synthetic_items=PILOT_ITEMS,
        data_seed=1,
    ),
)

QUICK = (
    Population(
        "synthetic (quick)",
        candidates=(Candidate(0.5, 3, 0.5, server_lr=50.0), Candidate(1.0, 2, 0.5, 50.0)),
        references=(Candidate(1.0, 3, 0.0, server_lr=50.0),),
        synthetic_users=300,
        synthetic_items=100,
    ),
)

_SPLITS: dict[tuple[str, str], LeaveOneOutSplit] = {}


def split_for(population: Population, data_dir: Path) -> LeaveOneOutSplit:
    """The population's leave-one-out split (cached per process)."""
    key = (population.name, str(data_dir))
    if key not in _SPLITS:
        if population.synthetic_users:
            data = make_synthetic(
                num_users=population.synthetic_users,
                num_items=population.synthetic_items,
                seed=population.data_seed,
            )
        else:
            data, _ = load_movielens_100k(data_dir)
        _SPLITS[key] = leave_one_out(data)
    return _SPLITS[key]


@dataclass(frozen=True)
class Job:
    """One federation: a population, a target epsilon, a candidate, and the phase
    (``valid``: train on Tr_u, score v_u; ``test``: train on Tr_u ∪ {v_u}, score t_u)."""

    population: Population
    data_dir: Path
    epsilon: float
    candidate: Candidate
    phase: str


def run(job: Job) -> dict[str, Any]:
    """Train one federation and score it on the job's phase."""
    split = split_for(job.population, job.data_dir)
    train = split.train if job.phase == "valid" else split.train_and_valid()
    targets = split.valid if job.phase == "valid" else split.test
    cand = job.candidate
    private = math.isfinite(job.epsilon)
    # the noise whose PLD epsilon after T rounds at rate q is the target (cached per process)
    noise = noise_for_epsilon(job.epsilon, cand.sampling_rate, cand.rounds, DELTA) if private else 0
    dp = SampledDP(
        sampling_rate=cand.sampling_rate,
        rounds=cand.rounds,
        clip_norm=cand.clip_norm if private else None,
        noise_multiplier=noise,
        adaptive_clipping=cand.adaptive_clipping() if private else None,
    )
    result = simulate_sampled(
        train,
        CONFIG.replace(dim=cand.dim),
        dp,
        strategy=cand.strategy(),
        lr_decay_per_round=LR_DECAY,
        views=per_user_views(train),
        refit_epochs=REFIT_EPOCHS,
    )
    metrics = evaluate_loo(result.score, train, targets)
    return {
        "population": job.population.name,
        "phase": job.phase,
        "target_epsilon": job.epsilon,
        "candidate": asdict(cand),
        "noise_multiplier": noise,
        "epsilon": pld_epsilon(noise, cand.sampling_rate, cand.rounds, DELTA)
        if private
        else math.inf,
        "mean_cohort": float(np.mean(result.cohort_sizes)) if result.cohort_sizes else 0.0,
        "clipped_fraction": float(np.mean(result.clipped_fraction)) if private else 0.0,
        "clip_norms": result.clip_norms,
        "update_noise_multiplier": result.update_noise_multiplier,
        "ndcg@10": metrics["ndcg@10"],
        "hr@10": metrics["hr@10"],
        "seconds": result.seconds,
    }


def popularity_test(population: Population, data_dir: Path) -> float:
    """Test NDCG@10 of the popularity floor (item counts of Tr_u ∪ {v_u})."""
    split = split_for(population, data_dir)
    train = split.train_and_valid()
    counts = np.bincount(train.items, minlength=train.num_items).astype(np.float32)
    return evaluate_loo(lambda u: np.tile(counts, (u.size, 1)), train, split.test)["ndcg@10"]


def _describe(row: dict[str, Any]) -> str:
    cand = Candidate(**row["candidate"])
    eps = "inf" if not math.isfinite(row["target_epsilon"]) else f"{row['target_epsilon']:g}"
    return (
        f"  [{row['population']}] eps {eps} {row['phase']}: "
        f"{cand.label(math.isfinite(row['target_epsilon']))}, "
        f"z={row['noise_multiplier']:.4g} (PLD eps {row['epsilon']:.3f}): "
        f"ndcg@10 {row['ndcg@10']:.4f}, hr@10 {row['hr@10']:.4f} "
        f"(cohort {row['mean_cohort']:.0f}, clipped {row['clipped_fraction']:.0%}, "
        f"{row['seconds']:.0f} s)"
    )


def frontier(
    populations: Sequence[Population],
    data_dir: Path,
    epsilons: Sequence[float],
    *,
    jobs: int = 1,
    test: bool = True,
) -> dict[str, Any]:
    """Select each (population, epsilon)'s candidate on validation, then test it once
    (``test`` False, the pilots: validation only, every candidate)."""
    started = time.perf_counter()
    # a grid of one candidate leaves nothing to choose: its test run only
    valid_jobs = [
        Job(
            population,
            data_dir,
            eps,
            cand,
            "valid" if len(population.grid(eps)) > 1 or not test else "test",
        )
        for population in populations
        for eps in epsilons
        for cand in population.grid(eps)
    ]
    valid_rows, test_rows = _schedule(valid_jobs, jobs, test=test)
    tables = []
    for population in populations:
        measured = sorted(
            (r for r in test_rows if r["population"] == population.name),
            key=lambda r: float(r["target_epsilon"]),
        )
        reference = next(
            (r["ndcg@10"] for r in measured if not math.isfinite(r["target_epsilon"])), 0
        )
        for r in measured:
            r["ratio_to_non_private"] = r["ndcg@10"] / reference if reference > 0 else None
        tables.append(
            {
                "population": population.name,
                "participants": split_for(population, data_dir).train.num_users,
                "popularity_test_ndcg@10": popularity_test(population, data_dir),
                "rows": measured,
            }
        )
    return {
        "delta": DELTA,
        "config": asdict(CONFIG),
        "lr_decay": LR_DECAY,
        "validation": valid_rows,
        "tables": tables,
        "seconds": time.perf_counter() - started,
    }


def _schedule(
    valid_jobs: Sequence[Job], jobs: int, *, test: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the validation jobs (and the test jobs of one-candidate grids), and each
    (population, epsilon)'s test job as soon as its candidates are all validated (ahead of
    the remaining validation jobs), so that an interrupted run has finished rows."""
    size: dict[tuple[str, float], int] = defaultdict(int)
    for job in valid_jobs:
        if job.phase == "valid":
            size[(job.population.name, job.epsilon)] += 1
    validated: dict[tuple[str, float], list[tuple[dict[str, Any], Job]]] = defaultdict(list)
    pending = deque(valid_jobs)
    valid_rows: list[dict[str, Any]] = []
    test_rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else _Serial() as pool:
        running: dict[Future[dict[str, Any]], Job] = {}
        while pending or running:
            while pending and len(running) < jobs:
                job = pending.popleft()
                running[pool.submit(run, job)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                row = future.result()
                print(_describe(row), flush=True)
                if job.phase == "test":
                    test_rows.append(row)
                    continue
                valid_rows.append(row)
                group = (job.population.name, job.epsilon)
                validated[group].append((row, job))
                if test and len(validated[group]) == size[group]:
                    best = max(validated[group], key=lambda pair: pair[0]["ndcg@10"])[1]
                    pending.appendleft(replace(best, phase="test"))
    return valid_rows, test_rows


class _Serial:
    """``ProcessPoolExecutor.submit`` in this process (``--jobs 1``, tests)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[[Job], dict[str, Any]], job: Job) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        future.set_result(fn(job))
        return future


def validation_markdown(figures: dict[str, Any]) -> str:
    """Every validation run, best first per (population, epsilon), as markdown."""
    lines = [
        "| population | target ε | candidate | z (updates' z) | clipped | C per round | "
        "valid NDCG@10 | valid HR@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(
        figures["validation"],
        key=lambda r: (r["population"], -float(r["target_epsilon"]), -r["ndcg@10"]),
    )
    for r in rows:
        private = math.isfinite(r["target_epsilon"])
        norms = r.get("clip_norms") or []
        path = f"{norms[0]:.3g} → {norms[-1]:.3g}" if norms and norms[0] != norms[-1] else "—"
        lines.append(
            f"| {r['population']} | {r['target_epsilon']:g} "
            f"| {Candidate(**r['candidate']).label(private)} "
            f"| {r['noise_multiplier']:.3f} ({r.get('update_noise_multiplier', 0):.3f}) "
            f"| {r['clipped_fraction']:.0%} | {path} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} |"
        )
    return "\n".join(lines)


def markdown(figures: dict[str, Any]) -> str:
    """The test table of each population as markdown."""
    lines = []
    for table in figures["tables"]:
        lines.append(
            f"\n{table['population']} ({table['participants']} participants; popularity "
            f"test NDCG@10 {table['popularity_test_ndcg@10']:.4f})\n"
        )
        lines.append(
            "| target ε | chosen q, T, C | z | PLD ε (δ = 1e-5) | mean cohort | clipped | "
            "test NDCG@10 | test HR@10 | × non-private |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in table["rows"]:
            private = math.isfinite(r["target_epsilon"])
            cand = Candidate(**r["candidate"])
            ratio = r["ratio_to_non_private"]
            lines.append(
                f"| {r['target_epsilon']:g} | {cand.label(private)} "
                f"| {r['noise_multiplier']:.3f} | {r['epsilon']:.3f} | {r['mean_cohort']:.0f} "
                f"| {r['clipped_fraction']:.0%} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | "
                f"{'—' if ratio is None else f'{ratio:.2f}'} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ML-100K folder")
    parser.add_argument("--quick", action="store_true", help="a tiny synthetic population only")
    parser.add_argument("--jobs", type=int, default=2, help="federations trained in parallel")
    parser.add_argument(
        "--epsilons", default="1,4,8,inf", help="target epsilons at delta 1e-5 (inf = no DP)"
    )
    parser.add_argument(
        "--only", help="run the populations whose name starts with this (ml-100k, synthetic)"
    )
    parser.add_argument(
        "--pilot",
        action="store_true",
        help="the pilot grids on their own draw of the generator, validation only",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    epsilons = [float(e) for e in args.epsilons.split(",")]
    populations: tuple[Population, ...] = QUICK if args.quick else PILOTS if args.pilot else FULL
    if args.only:
        populations = tuple(p for p in populations if p.name.startswith(args.only))
    figures = frontier(
        populations,
        args.data,
        epsilons,
        jobs=1 if args.quick else args.jobs,
        test=not args.pilot,
    )
    print(validation_markdown(figures) if args.pilot else markdown(figures))
    print(f"\ntotal {figures['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
