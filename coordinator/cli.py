"""The ``fedrec`` command line: serve, migrate, verify-lineage, gc (and the simulation jobs)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> object:
    try:
        from coordinator.config import Settings
    except ImportError as exc:  # the SDK-only install has no server dependencies
        raise SystemExit(
            f"the coordinator needs the server extra: pip install 'fedrec[server]' ({exc})"
        ) from exc
    overrides = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from coordinator.app import create_app
    from coordinator.bootstrap import load_secrets
    from coordinator.config import Settings
    from coordinator.migrate import upgrade

    settings = _settings(args)
    assert isinstance(settings, Settings)
    secrets = load_secrets(settings)  # creates the data directory on first start
    upgrade(settings.resolved_database_url)
    print(f"fedrec coordinator on http://{settings.host}:{settings.port}  (API docs: /docs)")
    print(f"  data directory: {settings.data_dir.resolve()}")
    print(f"  database:       {_redact(settings.resolved_database_url)}")
    print(f"  blobs:          {settings.blob_dir.resolve()}")
    if secrets.admin_token_file is not None:
        state = "generated now" if secrets.admin_token_created else "kept from an earlier start"
        print(f"  admin token:    in {secrets.admin_token_file.resolve()} ({state}, mode 0600)")
    else:
        print("  admin token:    from FEDREC_ADMIN_TOKEN")
    sys.stdout.flush()
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from coordinator.config import Settings
    from coordinator.migrate import upgrade

    settings = _settings(args)
    assert isinstance(settings, Settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    print(f"database at head: {_redact(settings.resolved_database_url)}")
    return 0


def cmd_verify_lineage(args: argparse.Namespace) -> int:
    from coordinator.app import build_context
    from coordinator.config import Settings
    from coordinator.domain.lineage import verify_lineage

    settings = _settings(args)
    assert isinstance(settings, Settings)
    report = verify_lineage(build_context(settings), args.federation_id)
    if report.checked == 0 and report.ok:
        print(f"federation {args.federation_id}: no model versions found", file=sys.stderr)
        return 2
    if report.ok:
        print(f"lineage ok: {report.checked} versions verified")
        return 0
    print(f"lineage broken at version {report.bad_version}: {report.reason}", file=sys.stderr)
    return 1


def cmd_gc(args: argparse.Namespace) -> int:
    from coordinator.app import build_context
    from coordinator.config import Settings
    from coordinator.domain.garbage import collect_garbage

    settings = _settings(args)
    assert isinstance(settings, Settings)
    report = collect_garbage(
        build_context(settings),
        grace_seconds=args.grace_hours * 3600.0,
        keep_finished_updates=not args.finished_round_updates,
        dry_run=args.dry_run,
    )
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"blobs: {verb} {report.removed} ({report.removed_bytes / 1e6:.1f} MB); "
        f"kept {report.kept} referenced, {report.recent} unreferenced inside the grace period"
    )
    return 0


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _simulation_options(args: argparse.Namespace, *, demo: bool) -> object:
    from coordinator.simulation import SimulationOptions

    dp = args.dp_clip is not None or args.dp_noise is not None
    return SimulationOptions(
        dataset="ml-100k" if demo else args.dataset,
        data=Path(args.data) if args.data else _env_path("FEDREC_ML100K_DIR") if demo else None,
        user_col=getattr(args, "user_col", None),
        item_col=getattr(args, "item_col", None),
        rating_col=getattr(args, "rating_col", None),
        time_col=getattr(args, "time_col", None),
        participants=args.participants,
        partition=args.partition,
        rounds=args.rounds,
        seed=args.seed,
        dim=args.dim,
        local_epochs=args.local_epochs,
        learning_rate=args.lr,
        reg=args.reg,
        negatives=args.negatives,
        recency_window=args.recency_window,
        recency_weight=args.recency_weight,
        server_lr=args.server_lr,
        # DP accepts only uniform weights and total normalization: default to them
        normalization=args.normalization or ("total" if dp else "touched"),
        weighting=args.weighting or ("uniform" if dp else "examples"),
        dp_clip=args.dp_clip,
        dp_noise=args.dp_noise,
        coordinator=args.coordinator,
        admin_token=args.admin_token or os.environ.get("FEDREC_ADMIN_TOKEN"),
        data_dir=Path(args.data_dir) if args.data_dir else None,
        report=Path(args.report) if args.report else None,
        workers=args.workers,
        fallback_to_synthetic=demo,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    from coordinator.simulation import SimulationOptions, run_simulation

    # the progress display tells the story; per-round log lines would break it up
    logging.getLogger("fedrec").setLevel(logging.WARNING)
    options = _simulation_options(args, demo=args.command == "demo")
    assert isinstance(options, SimulationOptions)
    run_simulation(options)
    return 0


def _add_simulation_arguments(parser: argparse.ArgumentParser, *, demo: bool) -> None:
    defaults = SIMULATION_DEFAULTS
    if not demo:
        parser.add_argument(
            "--dataset", choices=["ml-100k", "csv", "synthetic"], default="synthetic"
        )
    parser.add_argument("--data", help="dataset path (ml-100k folder, or a CSV/TSV file)")
    if not demo:
        parser.add_argument("--user-col", help="CSV column of the user id (auto-detected)")
        parser.add_argument("--item-col", help="CSV column of the item id (auto-detected)")
        parser.add_argument("--rating-col", help="CSV column of the rating (auto-detected)")
        parser.add_argument("--time-col", help="CSV column of the timestamp (auto-detected)")
    parser.add_argument("--participants", type=int, default=defaults["participants"])
    parser.add_argument(
        "--partition",
        choices=["iid", "skewed", "per-user"],
        default="iid",
        help="per-user = one participant per user (cross-device)",
    )
    parser.add_argument("--rounds", type=int, default=defaults["rounds"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=defaults["dim"], help="latent dimension")
    parser.add_argument(
        "--local-epochs",
        type=int,
        default=defaults["local_epochs"],
        help="local epochs per round (a recency-weighted epoch is short: see --recency-window)",
    )
    parser.add_argument("--lr", type=float, default=defaults["lr"], help="local learning rate")
    parser.add_argument("--reg", type=float, default=defaults["reg"])
    parser.add_argument("--negatives", type=int, default=defaults["negatives"])
    parser.add_argument(
        "--recency-window",
        type=int,
        default=defaults["recency_window"],
        help="each user's N latest interactions are sampled more often (0 = off)",
    )
    parser.add_argument(
        "--recency-weight",
        type=float,
        default=defaults["recency_weight"],
        help="how many times as often as older ones (only helps data with real timestamps)",
    )
    parser.add_argument("--server-lr", type=float, default=defaults["server_lr"])
    parser.add_argument(
        "--normalization",
        choices=["touched", "total"],
        help="FedAvg row weights: participants that touched the row, or all (see docs/api.md; "
        "default touched, total with --dp-clip)",
    )
    parser.add_argument(
        "--weighting",
        choices=["examples", "uniform"],
        help="FedAvg update weights: example counts, or 1 each (per-user federations; "
        "default examples, uniform with --dp-clip)",
    )
    parser.add_argument(
        "--dp-clip",
        type=_positive_float,
        metavar="C",
        help="differential privacy per participant: clip each update to L2 norm C "
        "(needs --dp-noise; forces --weighting uniform --normalization total)",
    )
    parser.add_argument(
        "--dp-noise",
        type=_non_negative_float,
        metavar="Z",
        help="Gaussian noise multiplier: std Z*C on the sum of clipped updates (0 = clip only)",
    )
    parser.add_argument("--coordinator", help="URL of a running coordinator (default: embedded)")
    parser.add_argument(
        "--admin-token", help="admin token of --coordinator (or FEDREC_ADMIN_TOKEN)"
    )
    parser.add_argument(
        "--data-dir", help="data folder of the embedded coordinator (default: temp)"
    )
    parser.add_argument("--report", help="write a JSON report (per-round history, final metrics)")
    parser.add_argument(
        "--workers", type=int, default=4, help="participants stepped side by side (threads)"
    )


# Best 20-round recipe for 5 IID silos at a constant learning rate (bench/RESULTS.md:
# ML-100K validation NDCG@10 ~0.079 with recency weighting, ~0.063 without). A recency-
# weighted epoch visits each user's 10 latest interactions 3 times (the negatives) and
# older ones 40x less, ~1/8 of a full pass on ML-100K, hence 8 local epochs; with
# --recency-window 0 use about 2. `fedrec demo` takes ~45 s on 2 cores.
SIMULATION_DEFAULTS: dict[str, float] = {
    "participants": 5,
    "rounds": 20,
    "dim": 64,
    "local_epochs": 8,
    "lr": 0.05,
    "reg": 0.01,
    "negatives": 3,
    "recency_window": 10,
    "recency_weight": 40.0,
    "server_lr": 2.0,
}


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the coordinator (migrates the database first)")
    serve.add_argument("--host", help="interface to listen on (FEDREC_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (FEDREC_PORT, default 8000)")
    serve.add_argument("--data-dir", help="data directory (FEDREC_DATA_DIR, default ./fedrec-data)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema to the latest version")
    migrate.add_argument("--data-dir", help="data directory (FEDREC_DATA_DIR)")
    migrate.set_defaults(func=cmd_migrate)

    verify = sub.add_parser(
        "verify-lineage",
        help="recompute a federation's hash chain; exit 1 naming the first bad version",
    )
    verify.add_argument("federation_id")
    verify.add_argument("--data-dir", help="data directory (FEDREC_DATA_DIR)")
    verify.set_defaults(func=cmd_verify_lineage)

    gc = sub.add_parser(
        "gc", help="remove blob files no row refers to (safe while coordinators run)"
    )
    gc.add_argument("--data-dir", help="data directory (FEDREC_DATA_DIR)")
    gc.add_argument(
        "--grace-hours",
        type=_non_negative_float,
        default=24.0,
        help="keep unreferenced files younger than this: longer than any upload or "
        "aggregation takes (default 24; 0 only while no coordinator runs)",
    )
    gc.add_argument(
        "--finished-round-updates",
        action="store_true",
        help="also remove the update bytes of closed and failed rounds (their rows and "
        "hashes stay; model versions are never removed)",
    )
    gc.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    gc.set_defaults(func=cmd_gc)

    simulate = sub.add_parser(
        "simulate", help="run a federation of N participants over HTTP against a coordinator"
    )
    _add_simulation_arguments(simulate, demo=False)
    simulate.set_defaults(func=cmd_simulate)

    demo = sub.add_parser(
        "demo", help="simulate on MovieLens 100K (downloaded; synthetic data if unavailable)"
    )
    _add_simulation_arguments(demo, demo=True)
    demo.set_defaults(func=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
