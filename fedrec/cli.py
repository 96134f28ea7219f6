"""The fedrec command line: serve, migrate, verify-lineage, gc (the coordinator);
simulate, demo (a whole federation on this machine); federations, participants, status,
promote, rollback (an admin's client of a running coordinator)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from fedrec.options import IALS_SERVER_LR, SimulationOptions, default_of

__all__ = ["build_parser", "main"]


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


# Options that default to None on the command line so that setting them pins them: the
# recipe search (--recipe auto) then keeps them and searches only the rest.
PINNABLE = (
    "model",
    "server_optimizer",
    "server_lr",
    "local_epochs",
    "user_epochs",
    "recency_window",
    "validation_window",
)


def _given(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name)
    return default_of(OPTION_FIELDS.get(name, name)) if value is None else value


def _simulation_options(args: argparse.Namespace, *, demo: bool) -> SimulationOptions:
    # DP and secure aggregation accept only uniform weights and total normalization
    dp = args.dp_clip is not None or args.dp_noise is not None or args.secure_aggregation
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
        patience=args.patience or None,
        min_delta=args.min_delta,
        min_rounds=args.min_rounds,
        validation_window=_given(args, "validation_window"),
        seed=args.seed,
        recipe=args.recipe,
        pinned=tuple(name for name in PINNABLE if getattr(args, name) is not None),
        model=_given(args, "model"),
        alpha=args.alpha,
        dim=args.dim,
        local_epochs=_given(args, "local_epochs"),
        learning_rate=args.lr,
        round_decay=args.round_decay,
        user_epochs=_given(args, "user_epochs"),
        reg=args.reg,
        negatives=args.negatives,
        recency_window=_given(args, "recency_window"),
        recency_weight=args.recency_weight,
        # FedAvg's default step depends on --model; other optimizers get the coordinator's
        server_lr=_server_lr(args)
        if args.server_lr is not None or _given(args, "server_optimizer") == "fedavg"
        else None,
        server_optimizer=_given(args, "server_optimizer"),
        server_momentum=args.server_momentum,
        server_beta1=args.server_beta1,
        server_beta2=args.server_beta2,
        server_tau=args.server_tau,
        proximal_mu=args.proximal_mu,
        normalization=args.normalization or ("total" if dp else default_of("normalization")),
        weighting=args.weighting or ("uniform" if dp else default_of("weighting")),
        dp_clip=args.dp_clip,
        dp_noise=args.dp_noise,
        secure_aggregation=args.secure_aggregation,
        secagg_threshold=args.secagg_threshold,
        secagg_clip=args.secagg_clip,
        secagg_graph=args.secagg_graph,
        secagg_degree=args.secagg_degree,
        encoding=args.encoding,
        coordinator=args.coordinator,
        admin_token=args.admin_token or os.environ.get("FEDREC_ADMIN_TOKEN"),
        data_dir=Path(args.data_dir) if args.data_dir else None,
        report=Path(args.report) if args.report else None,
        workers=args.workers,
        fallback_to_synthetic=demo,
    )


def _server_lr(args: argparse.Namespace) -> float:
    if args.server_lr is not None:
        return float(args.server_lr)
    # implicit ALS uploads closed-form steps, which a larger server step overshoots
    return IALS_SERVER_LR if _given(args, "model") == "ials" else float(default_of("server_lr"))


def cmd_simulate(args: argparse.Namespace) -> int:
    try:
        from fedrec.simulation import run_simulation
    except ImportError as exc:  # an install without the app extra (rich, the server)
        raise SystemExit(
            f"fedrec {args.command} needs the app extra: pip install 'fedrec[app]' ({exc})"
        ) from exc

    from fedrec.failures import describe_failure

    # the progress display tells the story; per-round log lines would break it up
    logging.getLogger("fedrec").setLevel(logging.WARNING)
    try:
        run_simulation(_simulation_options(args, demo=args.command == "demo"))
    except KeyboardInterrupt:
        sys.stderr.write(f"fedrec {args.command}: interrupted\n")
        return 130
    except Exception as exc:
        message = describe_failure(exc)
        if message is None or args.debug:
            raise  # a bug (or --debug): the traceback is what helps
        sys.stderr.write(f"fedrec {args.command}: error: {message}\n")
        return 1
    return 0


# The SimulationOptions field behind each option whose name differs from its field.
OPTION_FIELDS = {"lr": "learning_rate"}


def odd_positive_int(text: str) -> int:
    """A smoothing window: centred on the version it ranks, so odd."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be an odd number >= 1, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """A count that may be 0 (e.g. user epochs: 0 turns the refresh off)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_simulation_arguments(parser: argparse.ArgumentParser, *, demo: bool) -> None:
    from coordinator.cli import non_negative_float, positive_float

    if not demo:
        parser.add_argument(
            "--dataset",
            choices=["ml-100k", "csv", "synthetic"],
            default=default_of("dataset"),
            help="which data: MovieLens 100K, a CSV/TSV file (--data), or built-in synthetic data",
        )
    parser.add_argument("--data", help="dataset path (ml-100k folder, or a CSV/TSV file)")
    if not demo:
        parser.add_argument("--user-col", help="CSV column of the user id (auto-detected)")
        parser.add_argument("--item-col", help="CSV column of the item id (auto-detected)")
        parser.add_argument(
            "--rating-col",
            help="CSV column of the rating or interaction strength (count, plays, quantity; "
            "auto-detected); --model ials weighs training by it, splits and metrics ignore it",
        )
        parser.add_argument("--time-col", help="CSV column of the timestamp (auto-detected)")
    parser.add_argument(
        "--participants",
        type=int,
        default=default_of("participants"),
        help="how many participants share the users (ignored by --partition per-user)",
    )
    parser.add_argument(
        "--partition",
        choices=["iid", "skewed", "per-user"],
        default=default_of("partition"),
        help="per-user = one participant per user (cross-device)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=default_of("rounds"),
        help="round cap: training stops earlier once validation stops improving",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=default_of("patience"),
        help="stop after this many rounds without a validation gain (0 = run every round)",
    )
    parser.add_argument(
        "--min-delta",
        type=non_negative_float,
        default=default_of("min_delta"),
        help="the smallest validation NDCG@10 gain that counts as an improvement",
    )
    parser.add_argument(
        "--min-rounds",
        type=positive_int,
        default=None,
        help="never stop on patience before this many rounds (at most --rounds; default: "
        "the last round at which the recipe search saw the chosen recipe improve)",
    )
    parser.add_argument(
        "--validation-window",
        type=odd_positive_int,
        default=None,
        help="rank versions and count patience on validation NDCG@10 averaged over this "
        "many consecutive rounds centred on each (odd; 1 = each round's own value; "
        "default: the chosen recipe's)",
    )
    parser.add_argument(
        "--seed", type=int, default=default_of("seed"), help="seeds the data, split and training"
    )
    parser.add_argument(
        "--recipe",
        choices=["auto", "fixed"],
        default=default_of("recipe"),
        help="auto = choose the model and server optimizer by a short successive-halving "
        "search on the validation split (the ones you set with --model, --server-optimizer, "
        "--server-lr, --local-epochs, --recency-window are kept); fixed = use the options "
        f"as given (default {default_of('recipe')})",
    )
    parser.add_argument(
        "--no-auto",
        dest="recipe",
        action="store_const",
        const="fixed",
        default=default_of("recipe"),
        help="same as --recipe fixed",
    )
    # no argparse default for the pinnable options: setting one pins it (see --recipe)
    parser.add_argument(
        "--model",
        choices=["bpr", "ials", "ease"],
        help=f"(default {default_of('model')}) bpr = BPR-MF (row-sparse updates); "
        "ials = confidence-weighted implicit ALS "
        "(closed-form local solves, dense updates; --local-epochs, --lr, --negatives and "
        "--recency-* apply to bpr only); ease = closed-form EASE (one Gram upload, one "
        "round per candidate lambda, chosen on validation; at most 20k items)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=default_of("alpha"),
        help="ials confidence of an interaction: 1 + alpha * log1p(strength)",
    )
    parser.add_argument("--dim", type=int, default=default_of("dim"), help="latent dimension")
    parser.add_argument(
        "--local-epochs",
        type=int,
        help=f"(default {default_of('local_epochs')}) local epochs per round "
        "(a recency-weighted epoch is short: see --recency-window)",
    )
    parser.add_argument(
        "--lr", type=float, default=default_of("learning_rate"), help="local learning rate"
    )
    parser.add_argument(
        "--user-epochs",
        type=non_negative_int,
        help="bpr: user-only epochs against the round's model before the local epochs "
        "(default: as many as the local epochs for the touched-mean candidates with one user "
        "per participant, else 0)",
    )
    parser.add_argument(
        "--round-decay",
        type=float,
        default=default_of("round_decay"),
        help="bpr: round r trains at lr * ROUND_DECAY ** (r - 1), in (0, 1] (1 = constant)",
    )
    parser.add_argument(
        "--reg", type=float, default=default_of("reg"), help="L2 regularisation of the factors"
    )
    parser.add_argument(
        "--negatives",
        type=int,
        default=default_of("negatives"),
        help="bpr: negatives sampled per positive",
    )
    parser.add_argument(
        "--recency-window",
        type=int,
        help=f"(default {default_of('recency_window')}) each user's N latest interactions "
        "are sampled more often (0 = off)",
    )
    parser.add_argument(
        "--recency-weight",
        type=float,
        default=default_of("recency_weight"),
        help="how many times as often as older ones (only helps data with real timestamps)",
    )
    parser.add_argument(
        "--server-optimizer",
        choices=["fedavg", "fedavgm", "fedadam", "fedyogi"],
        help=f"(default {default_of('server_optimizer')}) how the coordinator applies the "
        "round's mean delta (FedAvgM: momentum; "
        "FedAdam/FedYogi: adaptive, Reddi et al. 2021; see docs/api.md)",
    )
    # no argparse default: FedAvg's default step would be far too large for FedAdam
    parser.add_argument(
        "--server-lr",
        type=positive_float,
        help=f"server step size eta (with fedavg: default {default_of('server_lr')} for bpr, "
        f"{IALS_SERVER_LR} for ials; else the coordinator's: 1 for fedavgm, 0.01 for "
        "fedadam/fedyogi)",
    )
    parser.add_argument(
        "--server-momentum", type=float, metavar="BETA", help="fedavgm momentum (default 0.9)"
    )
    parser.add_argument(
        "--server-beta1", type=float, help="fedadam/fedyogi first-moment decay (default 0.9)"
    )
    parser.add_argument(
        "--server-beta2", type=float, help="fedadam/fedyogi second-moment decay (default 0.99)"
    )
    parser.add_argument(
        "--server-tau", type=float, help="fedadam/fedyogi adaptivity tau (default 1e-3)"
    )
    parser.add_argument(
        "--proximal-mu",
        type=non_negative_float,
        default=default_of("proximal_mu"),
        help="FedProx mu: pull local item factors towards the round's base (0 = off)",
    )
    # no argparse default: with --dp-clip these default to what DP accepts
    parser.add_argument(
        "--normalization",
        choices=["touched", "total", "sqrt_touched"],
        help="FedAvg row weights: participants that touched the row, all of them, or the "
        "square root of those that touched it (see docs/api.md; "
        f"default {default_of('normalization')}, total with --dp-clip)",
    )
    parser.add_argument(
        "--weighting",
        choices=["examples", "uniform"],
        help="FedAvg update weights: example counts, or 1 each (per-user federations; "
        f"default {default_of('weighting')}, uniform with --dp-clip)",
    )
    parser.add_argument(
        "--dp-clip",
        type=positive_float,
        metavar="C",
        help="differential privacy per participant: clip each update to L2 norm C "
        "(needs --dp-noise; forces --weighting uniform --normalization total)",
    )
    parser.add_argument(
        "--dp-noise",
        type=non_negative_float,
        metavar="Z",
        help="Gaussian noise multiplier: std Z*C on the sum of clipped updates (0 = clip only)",
    )
    parser.add_argument(
        "--secure-aggregation",
        action="store_true",
        help="the coordinator sees only each round's sum (Bonawitz et al. 2017): participants "
        "clip, mask and upload in four phases; needs bpr or ials, forces --weighting uniform "
        "--normalization total, and runs every participant side by side",
    )
    parser.add_argument(
        "--secagg-threshold",
        type=int,
        metavar="T",
        help="secure aggregation: the fewest participants whose shares rebuild a dropped "
        "one's masks, and the fewest each phase needs (default: a majority)",
    )
    parser.add_argument(
        "--secagg-clip",
        type=positive_float,
        metavar="C",
        help="secure aggregation: each participant clips its update to L2 norm C "
        "(default: --dp-clip, else 100)",
    )
    parser.add_argument(
        "--secagg-graph",
        choices=["complete", "harary"],
        default=default_of("secagg_graph"),
        help="secure aggregation: share keys with everyone, or only with k neighbours on a "
        "random Harary graph (SecAgg+, Bell et al. 2020: client cost O(k) instead of O(n))",
    )
    parser.add_argument(
        "--secagg-degree",
        type=int,
        metavar="K",
        help="--secagg-graph harary: the even degree k (default 2*ceil(log2 n))",
    )
    parser.add_argument(
        "--encoding",
        choices=["float32", "float16", "int8"],
        default=default_of("encoding"),
        help="how updates and model downloads travel: float16 halves the bytes, int8 (a "
        "scale per item row) about quarters them; the coordinator aggregates in float32",
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
        "--workers",
        type=int,
        default=default_of("workers"),
        help="participants stepped side by side (threads)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not one line"
    )


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows each option's default in its help, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and action.nargs != 0  # a flag: its help says what it does
            and default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


class FedrecArgumentParser(argparse.ArgumentParser):
    """Every ``fedrec`` parser and subparser: defaults shown in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    # the coordinator's commands import only the standard library until they run
    from coordinator.cli import add_server_commands
    from fedrec.admin_cli import add_admin_commands

    parser = FedrecArgumentParser(prog="fedrec", description=__doc__)
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, parser_class=FedrecArgumentParser),
    )
    add_server_commands(sub)
    add_admin_commands(sub)

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
