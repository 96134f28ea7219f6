"""The admin's commands: create federations, enrol participants, watch, promote, roll back.

They talk to a running coordinator over HTTP through the participant SDK's client, like
any other client (nothing here imports the coordinator). The coordinator's URL and the
admin token come from ``--url``/``--admin-token``, else ``FEDREC_URL``/
``FEDREC_ADMIN_TOKEN``, else the token file that ``fedrec serve`` wrote
(``$FEDREC_DATA_DIR/admin_token``, by default ``./fedrec-data/admin_token``). The token is
never printed, not even in errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedrec.recipes import RECIPE_NAMES, load_recipe
from fedrec.terminal_chart import marker_line, sparkline
from participant_sdk import APIConnectionError, Client, FedrecError
from participant_sdk.types import Deployment, Federation, MetricsRow, Round

__all__ = ["add_admin_commands", "make_client", "resolve_connection"]

DEFAULT_URL = "http://127.0.0.1:8000"
# the curves `fedrec status` draws, in this order, when the federation reports them
CURVE_METRICS = ("ndcg@10", "hr@10", "precision@10", "recall@10")
# an admin at a terminal wants a quick answer, not the SDK's patient retries
CLI_MAX_RETRIES = 1
# the keys of a POST /v1/federations body
SPEC_KEYS = {"name", "model", "strategy", "rounds", "catalog", "target", "deploy", "privacy"}


class AdminError(Exception):
    """An expected failure: one line on stderr, exit code 1."""


def resolve_connection(args: argparse.Namespace) -> tuple[str, str]:
    """The coordinator URL and admin token from the flags, the environment or the file."""
    url = args.url or os.environ.get("FEDREC_URL") or DEFAULT_URL
    token = args.admin_token or os.environ.get("FEDREC_ADMIN_TOKEN")
    if not token:
        token_file = (
            Path(args.admin_token_file)
            if args.admin_token_file
            else Path(os.environ.get("FEDREC_DATA_DIR", "fedrec-data")) / "admin_token"
        )
        if token_file.is_file():
            token = token_file.read_text(encoding="utf-8").strip()
    if not token:
        raise AdminError(
            "no admin token: pass --admin-token, set FEDREC_ADMIN_TOKEN, or point "
            "--admin-token-file at the coordinator's data_dir/admin_token"
        )
    return url, token


def make_client(url: str, token: str) -> Client:
    """The SDK client the commands use (tests replace this to reach an in-process app)."""
    return Client(url, token, max_retries=CLI_MAX_RETRIES)


def _client(args: argparse.Namespace) -> Client:
    return make_client(*resolve_connection(args))


def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _dump(payload: object) -> None:
    _print(json.dumps(payload, indent=2, sort_keys=True, default=str))


def _dumped(args: argparse.Namespace, rows: Sequence[Any]) -> bool:
    """With ``--json``: print the rows as a JSON list and say so (the command is done)."""
    if args.json:
        _dump([row.model_dump(mode="json") for row in rows])
    return bool(args.json)


def _hand_out(args: argparse.Namespace, what: str, secret: str, audience: str) -> None:
    """A new token: into ``--token-file`` (mode 0600), or printed once."""
    if args.token_file:
        path = Path(args.token_file)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(secret + "\n", encoding="utf-8")
        _print(f"{what}; token in {path}")
    else:
        _print(what)
        _print(f"token (shown once{audience}): {secret}")


# ---------------------------------------------------------------------- federations
def _federation_body(args: argparse.Namespace) -> dict[str, Any]:
    """The create body from --spec or --recipe, with --name/--num-items/--catalog applied."""
    if args.spec:
        try:
            body: dict[str, Any] = json.loads(Path(args.spec).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AdminError(f"cannot read the spec {args.spec}: {exc}") from None
        if not isinstance(body, dict):
            raise AdminError(f"{args.spec}: a federation spec is a JSON object")
        unknown = sorted(set(body) - SPEC_KEYS)
        if unknown:  # the SDK sends only the keys it knows: a typo would vanish silently
            raise AdminError(f"{args.spec}: unknown keys {unknown}; a spec has {sorted(SPEC_KEYS)}")
    else:
        try:
            body = load_recipe(args.recipe)["federation"]
        except KeyError as exc:
            raise AdminError(str(exc.args[0])) from None
    body.setdefault("model", {})
    if args.catalog:
        lines = Path(args.catalog).read_text(encoding="utf-8").splitlines()
        body["catalog"] = [line.strip() for line in lines if line.strip()]
        body["model"].setdefault("num_items", len(body["catalog"]))
    if args.num_items is not None:
        body["model"]["num_items"] = args.num_items
    if "num_items" not in body["model"]:
        raise AdminError("the model needs num_items: pass --num-items N or --catalog FILE")
    body["name"] = args.name or body.get("name") or (args.recipe or Path(args.spec).stem)
    return body


def cmd_federations_create(args: argparse.Namespace) -> int:
    body = _federation_body(args)
    spec = {key: body.get(key) for key in ("strategy", "rounds", "target", "deploy", "privacy")}
    with _client(args) as admin:
        federation = admin.federations.create(
            body["name"], body["model"], catalog=body.get("catalog"), **spec
        )
    if args.json:
        _dump(federation.model_dump(mode="json"))
        return 0
    _print(f"federation {federation.id} created: {federation.name!r}, round 1 open")
    _print(f"  model: {federation.model.kind}, {federation.model.num_items} items")
    _print(f"  enrol participants: fedrec participants enrol {federation.id} NAME")
    return 0


def cmd_federations_list(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        federations = admin.federations.list()
    if _dumped(args, federations):
        return 0
    if not federations:
        _print("no federations")
    for fed in federations:
        deployed = "-" if fed.deployed_version is None else f"v{fed.deployed_version}"
        _print(
            f"{fed.id}  {fed.state:<10}  round {fed.current_round or '-':<4}  "
            f"latest v{fed.latest_version}  deployed {deployed}  "
            f"{fed.participant_count} participants  {fed.name}"
        )
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    for name in RECIPE_NAMES:
        recipe = load_recipe(name)
        if args.json:
            _print(json.dumps({"name": name, **recipe}, sort_keys=True))
            continue
        _print(f"{name}:")
        _print(f"  {recipe['description']}")
    return 0


# ---------------------------------------------------------------------- participants
def cmd_participants_enrol(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        enrolled = admin.participants.enrol(args.federation_id, args.name)
    _hand_out(
        args,
        f"participant {enrolled.id} ({enrolled.name}) enrolled",
        enrolled.token,
        "; give it to the participant",
    )
    return 0


def cmd_participants_list(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        participants = admin.participants.list(args.federation_id)
    if _dumped(args, participants):
        return 0
    for part in participants:
        _print(f"{part.id}  {part.state:<8}  {part.name}")
    return 0


# ---------------------------------------------------------------------- admin tokens
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """``--expires-in``: seconds, or a number with s, m, h or d (``90d``, ``12h``)."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], None)
    number = value[:-1] if unit else value
    if not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of seconds or one with s, m, h or d (e.g. 30d), got {text!r}"
        )
    return int(number) * (unit or 1)


def cmd_admin_tokens_create(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        issued = admin.admin_tokens.create(args.name, expires_in_seconds=args.expires_in)
    expires = f"{issued.expires_at:%Y-%m-%d %H:%M} UTC"
    _hand_out(args, f"admin token {issued.id} ({issued.name}) expires {expires}", issued.token, "")
    return 0


def cmd_admin_tokens_list(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        tokens = admin.admin_tokens.list()
    if _dumped(args, tokens):
        return 0
    for token in tokens:
        ends = token.revoked_at if token.revoked_at else token.expires_at
        when = (
            "revoked"
            if token.revoked_at
            else ("expired" if token.state == "expired" else "expires")
        )
        _print(
            f"{token.id}  {token.state:<8} {token.kind:<9} {when} {ends:%Y-%m-%d %H:%M}  "
            f"{token.name}"
        )
    return 0


def cmd_admin_tokens_revoke(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        token = admin.admin_tokens.revoke(args.token_id)
    _print(f"admin token {token.id} ({token.name}) revoked")
    return 0


# ---------------------------------------------------------------------- status
def _curves(rows: Sequence[MetricsRow], deployed: int | None) -> list[tuple[str, str, str, str]]:
    """(metric, sparkline, marker line, summary) per validation metric reported."""
    validation = sorted((r for r in rows if r.split == "validation"), key=lambda r: r.version)
    if not validation:
        return []
    versions = list(range(validation[0].version, validation[-1].version + 1))
    by_version = {r.version: r for r in validation}
    reported = {name for r in validation for name in r.metrics}
    names = [m for m in CURVE_METRICS if m in reported] + sorted(reported - set(CURVE_METRICS))
    mark = versions.index(deployed) if deployed in versions else None
    curves = []
    for name in names:
        values = [by_version[v].metrics.get(name) if v in by_version else None for v in versions]
        known = [(v, x) for v, x in zip(versions, values, strict=True) if x is not None]
        best_v, best = max(known, key=lambda pair: (pair[1], pair[0]))
        summary = (
            f"v{known[0][0]} {known[0][1]:.4f} -> v{known[-1][0]} {known[-1][1]:.4f}, "
            f"best v{best_v} {best:.4f}"
        )
        curves.append((name, sparkline(values), marker_line(mark, len(versions)), summary))
    return curves


def _status_payload(
    federation: Federation,
    rounds: Sequence[Round],
    metrics: Sequence[MetricsRow],
    deployment: Deployment | None,
    active: int,
) -> dict[str, Any]:
    return {
        "federation": federation.model_dump(mode="json"),
        "active_participants": active,
        "rounds": [r.model_dump(mode="json") for r in rounds],
        "metrics": [m.model_dump(mode="json") for m in metrics],
        "deployment": deployment.model_dump(mode="json") if deployment else None,
    }


def cmd_status(args: argparse.Namespace) -> int:
    from participant_sdk import NotFoundError

    fid = args.federation_id
    with _client(args) as admin:
        federation = admin.federations.get(fid)
        rounds = admin.rounds.list(fid)
        participants = admin.participants.list(fid)
        metrics = admin.metrics(fid)
        try:
            deployment: Deployment | None = admin.deployment.get(fid)
        except NotFoundError:
            deployment = None
    active = sum(1 for p in participants if p.state == "active")
    if args.json:
        _dump(_status_payload(federation, rounds, metrics, deployment, active))
        return 0
    _print(f"federation {federation.id} {federation.name!r}: {federation.state}")
    limit = (federation.rounds.max_rounds if federation.rounds else None) or "-"
    _print(
        f"  model {federation.model.kind}, {federation.model.num_items} items; "
        f"latest version {federation.latest_version}; round cap {limit}"
    )
    revoked = len(participants) - active
    _print(f"  participants: {active} active" + (f", {revoked} revoked" if revoked else ""))
    if deployment is None:
        _print("  deployed: nothing yet")
    else:
        last = deployment.history[-1] if deployment.history else None
        how = f" ({last.reason}{' by ' + last.actor if last.actor else ''})" if last else ""
        _print(f"  deployed: version {deployment.version}{how}")
    if federation.privacy_spent is not None:
        spent = federation.privacy_spent
        epsilon = "unbounded" if spent.epsilon is None else f"{spent.epsilon:.3f}"
        _print(
            f"  privacy spent: epsilon {epsilon} at delta {spent.delta:g} over "
            f"{spent.rounds} rounds"
        )
    if rounds:
        _print(f"rounds (last {min(len(rounds), args.rounds)} of {len(rounds)}):")
        for rnd in rounds[-args.rounds :]:
            result = "" if rnd.result_version is None else f" -> v{rnd.result_version}"
            _print(
                f"  #{rnd.number:<4} {rnd.state:<12} base v{rnd.base_version}{result:<7} "
                f"{rnd.update_count}/{active} updates"
            )
    curves = _curves(metrics, None if deployment is None else deployment.version)
    if curves:
        _print("validation metrics per version (^ = deployed):")
        width = max(len(name) for name, *_ in curves)
        for name, line, marker, summary in curves:
            _print(f"  {name:<{width}}  {line}  {summary}")
            if marker:
                _print(f"  {'':<{width}}  {marker.replace('▲', '^')}")
    else:
        _print("validation metrics: none reported yet")
    return 0


# ---------------------------------------------------------------------- deployment
def cmd_promote(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        deployment = admin.deployment.promote(args.federation_id, args.version)
    _print(f"federation {args.federation_id}: version {deployment.version} is deployed")
    return 0


def _previous_version(deployment: Deployment) -> int:
    """The version live before the current one (the history is oldest first)."""
    for event in reversed(deployment.history):
        if event.version != deployment.version:
            return event.version
    raise AdminError(
        f"version {deployment.version} is the only one ever deployed; "
        "pass --to VERSION to deploy another"
    )


def cmd_rollback(args: argparse.Namespace) -> int:
    from participant_sdk import NotFoundError

    with _client(args) as admin:
        try:
            current = admin.deployment.get(args.federation_id)
        except NotFoundError:
            raise AdminError("nothing is deployed yet, so there is nothing to roll back") from None
        target = args.to if args.to is not None else _previous_version(current)
        deployment = admin.deployment.promote(args.federation_id, target)
    _print(
        f"federation {args.federation_id}: rolled back from version {current.version} "
        f"to {deployment.version}"
    )
    return 0


# ---------------------------------------------------------------------- wiring
def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected failures as one ``fedrec CMD: error: ...`` line and exit 1."""

    def run(args: argparse.Namespace) -> int:
        debug = getattr(args, "debug", False)
        # the SDK logs each retry at INFO: noise in front of the one error line
        sdk_log = logging.getLogger("participant_sdk")
        level = sdk_log.level
        sdk_log.setLevel(logging.DEBUG if debug else logging.WARNING)
        try:
            return command(args)
        except (AdminError, FedrecError, OSError) as exc:
            if debug:
                raise
            action = getattr(args, "admin_action", None)
            name = f"{args.command} {action}" if action else args.command
            hint = ""
            if isinstance(exc, APIConnectionError):
                hint = " (is the coordinator running there? --url or FEDREC_URL)"
            sys.stderr.write(f"fedrec {name}: error: {exc}{hint}\n")
            return 1
        finally:
            sdk_log.setLevel(level)

    return run


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the coordinator's URL (or FEDREC_URL; else {DEFAULT_URL})")
    parser.add_argument(
        "--admin-token",
        help="the admin token (or FEDREC_ADMIN_TOKEN, which keeps it out of the process "
        "list); never printed",
    )
    parser.add_argument(
        "--admin-token-file",
        help="read the admin token from this file (else $FEDREC_DATA_DIR/admin_token, "
        "i.e. ./fedrec-data/admin_token, when it exists)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not one line"
    )


def _add_token_file(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"write {what} to FILE (mode 0600) instead of printing it",
    )


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    command: Callable[[argparse.Namespace], int],
    help_text: str,
    *,
    json_output: bool = True,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    _add_connection_options(parser)
    if json_output:
        parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    parser.set_defaults(func=_guarded(command))
    return parser


def add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add federations, participants, admin-tokens, status, promote and rollback to
    ``fedrec``."""
    federations = sub.add_parser(
        "federations", help="create and list federations on a running coordinator"
    )
    fed_sub = federations.add_subparsers(dest="admin_action", required=True)
    create = _command(
        fed_sub,
        "create",
        cmd_federations_create,
        "create a federation from a JSON spec or a ready-made recipe",
    )
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--spec", metavar="FILE", help="a JSON POST /v1/federations body (see docs/api.md)"
    )
    source.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        help="a ready-made recipe (fedrec federations recipes describes each)",
    )
    create.add_argument("--name", help="the federation's name (default: the recipe's or file's)")
    create.add_argument(
        "--num-items", type=int, help="catalog size (default: the catalog's length)"
    )
    create.add_argument(
        "--catalog", metavar="FILE", help="the item catalog: one external item id per line"
    )
    _command(fed_sub, "list", cmd_federations_list, "list the federations")
    recipes = fed_sub.add_parser(
        "recipes", help="describe the ready-made recipes", description="the recipes"
    )
    recipes.add_argument("--json", action="store_true", help="one JSON object per recipe")
    recipes.set_defaults(func=cmd_recipes)

    participants = sub.add_parser("participants", help="enrol and list participants")
    part_sub = participants.add_subparsers(dest="admin_action", required=True)
    enrol = _command(
        part_sub,
        "enrol",
        cmd_participants_enrol,
        "enrol a participant; its token is shown once",
        json_output=False,
    )
    enrol.add_argument("federation_id", help="the federation's id")
    enrol.add_argument("name", help="the participant's name (an organisation or device)")
    _add_token_file(enrol, "the participant's token")
    plist = _command(part_sub, "list", cmd_participants_list, "list a federation's participants")
    plist.add_argument("federation_id", help="the federation's id")

    tokens = sub.add_parser(
        "admin-tokens",
        help="create, list and revoke admin tokens (each expires; rotate: create, switch, revoke)",
    )
    token_sub = tokens.add_subparsers(dest="admin_action", required=True)
    tcreate = _command(
        token_sub,
        "create",
        cmd_admin_tokens_create,
        "create an admin token; it is shown once",
        json_output=False,
    )
    tcreate.add_argument("name", help="what the token is for (e.g. ci-deploy)")
    tcreate.add_argument(
        "--expires-in",
        type=duration_seconds,
        metavar="DURATION",
        help="lifetime: seconds, or with s/m/h/d (e.g. 7d; 60 s to 366 d); default: the "
        "coordinator's FEDREC_ADMIN_TOKEN_TTL_SECONDS (30 days unless configured)",
    )
    _add_token_file(tcreate, "the admin token")
    _command(token_sub, "list", cmd_admin_tokens_list, "list admin tokens (never their secrets)")
    trevoke = _command(
        token_sub,
        "revoke",
        cmd_admin_tokens_revoke,
        "revoke an admin token (not the last active one)",
        json_output=False,
    )
    trevoke.add_argument("token_id", help="the admin token's id (fedrec admin-tokens list)")

    status = _command(
        sub,
        "status",
        cmd_status,
        "a federation's state, rounds, participation, deployment and validation curves",
    )
    status.add_argument("federation_id", help="the federation's id")
    status.add_argument("--rounds", type=int, default=10, help="how many recent rounds to list")

    promote = _command(sub, "promote", cmd_promote, "deploy a model version", json_output=False)
    promote.add_argument("federation_id", help="the federation's id")
    promote.add_argument("version", type=int, help="the model version to deploy")

    rollback = _command(
        sub,
        "rollback",
        cmd_rollback,
        "deploy the version that was live before the current one",
        json_output=False,
    )
    rollback.add_argument("federation_id", help="the federation's id")
    rollback.add_argument(
        "--to",
        type=int,
        metavar="VERSION",
        help="deploy this version instead (default: the previous one)",
    )
