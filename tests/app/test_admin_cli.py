"""The admin commands (``fedrec federations/participants/status/promote/rollback``)
against the in-process coordinator, through the SDK client as over HTTP; the recipes
they ship; and ``fedrec --help`` describing every option."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import fedrec.admin_cli as admin_cli
from fedrec.cli import build_parser, main
from fedrec.recipes import RECIPE_NAMES, derive_recipes, load_recipe
from fedrec.terminal_chart import marker_line, sparkline
from participant_sdk import Client
from tests.conftest import ADMIN_TOKEN
from tests.factories import evaluate

Run = Any  # the helper below: run(*argv) -> (exit code, stdout, stderr)


@pytest.fixture
def coordinator(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def run(
    coordinator: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """``fedrec ARGS`` with the SDK client reaching the in-process coordinator; the
    admin token comes from FEDREC_ADMIN_TOKEN, as an operator would set it."""
    seen: list[tuple[str, str]] = []

    def make_client(url: str, token: str) -> Client:
        seen.append((url, token))
        return Client(url, token, http_client=coordinator)

    monkeypatch.setattr(admin_cli, "make_client", make_client)
    monkeypatch.setenv("FEDREC_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("FEDREC_URL", str(coordinator.base_url))

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert ADMIN_TOKEN not in out + err  # never echoed
        return code, out, err

    invoke.seen = seen  # type: ignore[attr-defined]
    return invoke


def _create(run: Run, *extra: str) -> str:
    code, out, err = run("federations", "create", "--recipe", "bpr-silos", *extra, "--json")
    assert code == 0, err
    fid: str = json.loads(out)["id"]
    return fid


# ---------------------------------------------------------------------- recipes
def test_the_shipped_recipes_are_what_the_defaults_derive() -> None:
    derived = derive_recipes()
    assert sorted(derived) == sorted(RECIPE_NAMES)
    for name in RECIPE_NAMES:
        assert load_recipe(name) == json.loads(json.dumps(derived[name])), name
        assert load_recipe(name)["description"]


def test_the_default_recipe_follows_the_simulation_defaults() -> None:
    from fedrec.options import SimulationOptions

    defaults = SimulationOptions()
    recipe = load_recipe("bpr-silos")
    assert recipe["federation"]["strategy"] == defaults.strategy()
    assert recipe["federation"]["rounds"] == defaults.round_policy()
    assert recipe["federation"]["model"]["dim"] == defaults.dim
    assert recipe["participant_config"]["epochs"] == defaults.local_epochs
    cross = load_recipe("bpr-cross-device")["federation"]["strategy"]
    assert (cross["weighting"], cross["normalization"]) == ("uniform", "total")


def test_an_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="bpr-silos"):
        load_recipe("nope")


def test_every_recipe_creates_a_federation(run: Run) -> None:
    for name in RECIPE_NAMES:
        code, out, err = run("federations", "create", "--recipe", name, "--num-items", "30")
        assert code == 0, (name, err)
        assert "round 1 open" in out


# ---------------------------------------------------------------------- federations
def test_create_from_a_spec_file_with_a_catalog(run: Run, tmp_path: Path) -> None:
    spec = tmp_path / "movies.json"
    spec.write_text(
        json.dumps({"name": "movies", "model": {"kind": "mf", "dim": 4}}), encoding="utf-8"
    )
    catalog = tmp_path / "items.txt"
    catalog.write_text("".join(f"sku-{k}\n" for k in range(12)), encoding="utf-8")
    code, out, err = run(
        "federations", "create", "--spec", str(spec), "--catalog", str(catalog), "--json"
    )
    assert code == 0, err
    federation = json.loads(out)
    assert (federation["name"], federation["model"]["num_items"]) == ("movies", 12)
    code, out, _ = run("federations", "list")
    assert federation["id"] in out
    assert "movies" in out
    assert run.seen[-1] == (run.seen[0][0], ADMIN_TOKEN)


def test_create_without_a_size_says_what_to_pass(run: Run) -> None:
    code, _out, err = run("federations", "create", "--recipe", "ials")
    assert code == 1
    assert "--num-items N or --catalog FILE" in err


def test_a_refused_spec_is_one_line_with_the_coordinators_reason(run: Run, tmp_path: Path) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"model": {"kind": "mf", "num_items": 5, "dim": 0}}))
    code, _out, err = run("federations", "create", "--spec", str(spec))
    assert code == 1
    assert err.startswith("fedrec federations create: error: 422")
    assert "dim" in err
    assert len(err.strip().splitlines()) == 1


def test_a_misspelt_spec_key_is_refused_not_dropped(run: Run, tmp_path: Path) -> None:
    spec = tmp_path / "typo.json"
    spec.write_text(json.dumps({"model": {"kind": "mf", "num_items": 5}, "strategie": {}}))
    code, _out, err = run("federations", "create", "--spec", str(spec))
    assert code == 1
    assert "unknown keys ['strategie']" in err


def test_spec_and_recipe_are_exclusive(run: Run) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("federations", "create", "--spec", "x.json", "--recipe", "ials")
    assert exit_info.value.code == 2


# ---------------------------------------------------------------------- participants
def test_enrol_shows_the_token_once_or_writes_it_to_a_file(run: Run, tmp_path: Path) -> None:
    fid = _create(run, "--num-items", "20")
    code, out, _ = run("participants", "enrol", fid, "shop-1")
    assert code == 0
    token = out.split("token (shown once; give it to the participant): ")[1].strip()
    assert len(token) > 20
    token_file = tmp_path / "shop-2.token"
    code, out, _ = run("participants", "enrol", fid, "shop-2", "--token-file", str(token_file))
    assert code == 0
    written = token_file.read_text().strip()
    assert written not in out
    assert token_file.stat().st_mode & 0o777 == 0o600
    code, out, _ = run("participants", "list", fid)
    assert "shop-1" in out
    assert "shop-2" in out


# ---------------------------------------------------------------------- status
def test_status_shows_rounds_participation_deployment_and_curves(
    run: Run, coordinator: TestClient
) -> None:
    fid = _create(run, "--num-items", "20")
    admin = Client(str(coordinator.base_url), ADMIN_TOKEN, http_client=coordinator)
    enrolled = [admin.participants.enrol(fid, f"p{k}") for k in range(2)]
    headers = {"Authorization": f"Bearer {enrolled[0].token}"}
    # one participant uploads round 1; the admin closes it: version 1
    part = Client(str(coordinator.base_url), enrolled[0].token, http_client=coordinator)
    weights = part.models.weights(fid, 0)
    deltas = {name: np.zeros_like(array) for name, array in weights.items()}
    part.updates.submit(fid, 1, deltas, base_version=0, num_examples=5)
    admin.rounds.aggregate(fid, 1)
    for version, ndcg in ((0, 0.01), (1, 0.05)):
        assert evaluate(coordinator, fid, version, headers, metrics={"ndcg@10": ndcg}).is_success
    admin.deployment.promote(fid, 1)

    code, out, err = run("status", fid)
    assert code == 0, err
    assert "participants: 2 active" in out
    assert "deployed: version 1 (promote" in out
    assert "1/2 updates" in out
    curve = next(line for line in out.splitlines() if line.strip().startswith("ndcg@10"))
    assert "▁█" in curve
    assert "v0 0.0100 -> v1 0.0500, best v1 0.0500" in curve
    marker = out.splitlines()[out.splitlines().index(curve) + 1]
    assert marker.rstrip().endswith("^")
    assert marker.index("^") == curve.index("█")  # under the deployed version

    code, out, _ = run("status", fid, "--json")
    payload = json.loads(out)
    assert payload["deployment"]["version"] == 1
    assert payload["active_participants"] == 2
    assert [r["number"] for r in payload["rounds"]][:2] == [1, 2]


def test_status_of_an_unknown_federation_is_a_clear_error(run: Run) -> None:
    code, out, err = run("status", "no-such-federation")
    assert code == 1
    assert out == ""
    assert err.startswith("fedrec status: error: 404")


# ---------------------------------------------------------------------- deployment
def test_promote_then_rollback_to_the_previous_version(run: Run, coordinator: TestClient) -> None:
    fid = _create(run, "--num-items", "20")
    admin = Client(str(coordinator.base_url), ADMIN_TOKEN, http_client=coordinator)
    token = admin.participants.enrol(fid, "p").token
    part = Client(str(coordinator.base_url), token, http_client=coordinator)
    for number in (1, 2):
        weights = part.models.weights(fid, number - 1)
        deltas = {name: np.zeros_like(array) for name, array in weights.items()}
        part.updates.submit(fid, number, deltas, base_version=number - 1, num_examples=1)
        admin.rounds.wait_for_next(fid, after=number, timeout=30)

    code, out, _ = run("rollback", fid)
    assert code == 1  # nothing deployed yet
    assert run("promote", fid, "1")[0] == 0
    code, _out, err = run("rollback", fid)
    assert code == 1
    assert "--to VERSION" in err
    assert run("promote", fid, "2")[0] == 0
    assert admin.deployment.get(fid).version == 2
    code, out, _ = run("rollback", fid)
    assert code == 0
    assert "from version 2 to 1" in out
    assert admin.deployment.get(fid).version == 1
    assert run("rollback", fid, "--to", "0")[0] == 0
    assert admin.deployment.get(fid).version == 0


# ---------------------------------------------------------------------- connection
def _connection_args(**values: str | None) -> argparse.Namespace:
    return argparse.Namespace(
        url=values.get("url"),
        admin_token=values.get("admin_token"),
        admin_token_file=values.get("admin_token_file"),
    )


def test_connection_comes_from_flags_then_env_then_the_token_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FEDREC_URL", raising=False)
    monkeypatch.delenv("FEDREC_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("FEDREC_DATA_DIR", str(tmp_path))
    with pytest.raises(admin_cli.AdminError, match="no admin token"):
        admin_cli.resolve_connection(_connection_args())
    (tmp_path / "admin_token").write_text("from-file\n")
    assert admin_cli.resolve_connection(_connection_args()) == (
        admin_cli.DEFAULT_URL,
        "from-file",
    )
    monkeypatch.setenv("FEDREC_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("FEDREC_URL", "http://coordinator:9000")
    assert admin_cli.resolve_connection(_connection_args()) == (
        "http://coordinator:9000",
        "from-env",
    )
    flags = _connection_args(url="http://flag:1", admin_token="from-flag")
    assert admin_cli.resolve_connection(flags) == ("http://flag:1", "from-flag")


def test_an_unreachable_coordinator_is_one_line_without_the_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDREC_ADMIN_TOKEN", "secret-admin-token-123")
    # port 9 (discard) on localhost: nothing listens, the connection is refused
    code = main(["status", "f1", "--url", "http://127.0.0.1:9"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("fedrec status: error:")
    assert "secret-admin-token-123" not in out + err


# ---------------------------------------------------------------------- help
def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _all_parsers(child)


def test_every_option_has_help_and_shows_its_default() -> None:
    for prog, parser in _all_parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            name = action.option_strings[0] if action.option_strings else action.dest
            assert action.help, f"{prog} {name} has no help"
            default = action.default
            if action.option_strings and action.nargs != 0 and default not in (None, False):
                shown = formatter._expand_help(action)
                assert "default" in shown, f"{prog} {name}: default {default!r} not shown"
                assert str(default) in shown or "(default " in shown, (prog, name, shown)


def test_status_help_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    out = capsys.readouterr().out
    assert "FEDREC_ADMIN_TOKEN" in out
    assert "(default: 10)" in out


# ---------------------------------------------------------------------- chart
def test_sparkline_scales_and_marks() -> None:
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert sparkline([0.2, None, 0.2]) == "▅ ▅"
    assert sparkline([]) == ""
    assert marker_line(2, 3) == "  ▲"
    assert marker_line(None, 3) == ""
