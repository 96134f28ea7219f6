"""bench.smoothing.chosen_setup: the setup bench.smoothing and bench.averaging share."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from bench.smoothing import add_chosen_arguments, chosen_setup

ML100K = Path("/work/shared/datasets/ml-100k")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_chosen_arguments(parser)
    return parser.parse_args(["--data", str(ML100K), *argv])


@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason="ML-100K is not here")
def test_the_chosen_candidate_and_overrides_shape_the_options() -> None:
    setup = chosen_setup(_args("--set", "local_epochs=3"))
    assert setup.candidate.name == "bpr+fedavg-sum"
    assert setup.overrides == {"local_epochs": 3}
    assert setup.options.local_epochs == 3
    # the candidate's own settings are applied, except where --set overrides them
    for field, value in setup.candidate.settings.items():
        if field != "local_epochs":
            assert getattr(setup.options, field) == value
    # per-user (the default): one participant per user, every user exactly once
    owned = np.sort(np.concatenate(setup.groups))
    assert owned.tolist() == list(range(setup.data.num_users))
    assert setup.split.train.num_users == setup.data.num_users


@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason="ML-100K is not here")
def test_an_unknown_candidate_names_the_choices() -> None:
    with pytest.raises(SystemExit, match="not a candidate here; one of .*bpr\\+fedavg-sum"):
        chosen_setup(_args("--chosen", "no-such-recipe"))


def test_a_set_of_an_unknown_field_is_refused() -> None:
    with pytest.raises(SystemExit, match="no SimulationOptions field"):
        chosen_setup(
            argparse.Namespace(**{**vars(_args()), "set": ["nope=1"], "data": Path("/nonexistent")})
        )
