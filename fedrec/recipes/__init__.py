"""Ready-made federation recipes: the JSON files beside this module, and how they derive.

``fedrec federations create --recipe NAME`` reads ``NAME.json`` from this folder, so an
install needs nothing but the files. Each file is the product's default recipe
(:class:`fedrec.options.SimulationOptions`, the one home of the defaults) with the
changes its case needs; :func:`derive_recipes` computes them, ``python -m
fedrec.recipes`` rewrites the files, and a test checks that the shipped files equal what
the defaults derive, so they cannot drift apart.

A recipe's ``federation`` is a ``POST /v1/federations`` body without ``name`` and
without ``model.num_items``/``catalog``, which depend on the data: the command line
fills them in (``--num-items``, or ``--catalog FILE`` with one item id per line). Its
``participant_config`` is the local training the recipe was measured with (the SDK's
own config defaults are plainer): ``FederatedRecommender(..., config=BPRConfig(**it))``
(``IALSConfig`` for ``ials``; ``ease`` has none).
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["RECIPE_NAMES", "derive_recipes", "load_recipe", "write_recipes"]

RECIPE_NAMES = ("bpr-silos", "bpr-cross-device", "ials", "ease")
# deploy the best version on validation NDCG@10, as `fedrec simulate` does
DEPLOY_BEST = {"policy": "best", "metric": "ndcg@10"}
# the local-training fields a partner sets; dim comes from the federation, seed is theirs
BPR_FIELDS = (
    "learning_rate",
    "round_decay",
    "user_epochs",
    "reg",
    "negatives",
    "epochs",
    "recency_window",
    "recency_weight",
)
IALS_FIELDS = ("reg", "alpha")


def _fields(config: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(config, name) for name in names}


def _bpr_recipe(**changes: Any) -> dict[str, Any]:
    from fedrec.options import SimulationOptions

    options = dataclasses.replace(SimulationOptions(), **changes)
    return {
        "federation": {
            "model": {"kind": "mf", "dim": options.dim},
            "strategy": options.strategy(),
            "rounds": options.round_policy(),
            "deploy": options.deploy_policy(),
        },
        "participant_config": _fields(options.bpr_config(), BPR_FIELDS),
    }


def derive_recipes() -> dict[str, dict[str, Any]]:
    """Every recipe, computed from the simulation defaults (the shipped files' source)."""
    from coordinator.domain.specs import EASE_DEFAULT_LAMBDAS
    from fedrec.options import IALS_SERVER_LR, SimulationOptions

    defaults = SimulationOptions()
    ials = dataclasses.replace(defaults, model="ials", server_lr=IALS_SERVER_LR)
    ease = dataclasses.replace(defaults, model="ease", rounds=len(EASE_DEFAULT_LAMBDAS))
    return {
        "bpr-silos": {
            "description": (
                "The default recipe: BPR matrix factorisation with FedAvg, for a few "
                "organisations (silos) that each hold many users. Participants upload "
                "row-sparse item-factor deltas; training stops when validation NDCG@10 "
                f"has not improved for {defaults.patience} rounds (at most "
                f"{defaults.rounds}) and the best validated version is deployed (both on "
                f"validation averaged over {defaults.validation_window} consecutive versions)."
            ),
            **_bpr_recipe(),
        },
        "bpr-cross-device": {
            "description": (
                "BPR with FedAvg for one participant per user (devices): every update "
                "weighs the same (weighting uniform) and each item row is averaged over "
                "all participants (normalization total), so a device with many "
                "interactions does not dominate. This is also the setting differential "
                "privacy requires, should you add a privacy policy."
            ),
            **_bpr_recipe(weighting="uniform", normalization="total"),
        },
        "ials": {
            "description": (
                "Confidence-weighted implicit ALS (Hu et al. 2008, federated as in FCF): "
                "participants solve their users' factors in closed form and upload dense "
                "item steps; use it when interactions carry a strength (plays, counts). "
                "The server step is 1: averaging closed-form steps is the step itself."
            ),
            "federation": {
                "model": {"kind": "ials", "dim": ials.dim},
                "strategy": ials.strategy(),
                "rounds": ials.round_policy(),
                "deploy": ials.deploy_policy(),
            },
            "participant_config": _fields(ials.ials_config(), IALS_FIELDS),
        },
        "ease": {
            "description": (
                "Closed-form EASE (Steck 2019): each participant uploads its item Gram once "
                "and the coordinator solves one model per candidate lambda, one round each, "
                "deploying the best validated one (federated equals centralized). At most "
                "20k items; the coordinator sees each participant's item co-occurrences."
            ),
            "federation": {
                "model": {"kind": "ease", "ease_lambdas": list(EASE_DEFAULT_LAMBDAS)},
                "rounds": {"min_participants": 1, "max_rounds": ease.rounds},
                "deploy": dict(DEPLOY_BEST),
            },
        },
    }


def _folder() -> Path:
    return Path(str(resources.files(__name__)))


def load_recipe(name: str) -> dict[str, Any]:
    """The shipped recipe ``name`` (``description`` and ``federation``).

    Raises
    ------
    KeyError
        No recipe has that name (the message lists the ones there are).
    """
    if name not in RECIPE_NAMES:
        raise KeyError(f"no recipe {name!r}; the recipes are: {', '.join(RECIPE_NAMES)}")
    recipe: dict[str, Any] = json.loads((_folder() / f"{name}.json").read_text("utf-8"))
    return recipe


def write_recipes(folder: Path | None = None) -> list[Path]:
    """Write every derived recipe as ``NAME.json`` (the files this package ships)."""
    folder = folder or _folder()
    written = []
    for name, recipe in derive_recipes().items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
