"""Federated EASE (Steck, WWW 2019): an exact sum of Grams, then one solve per lambda.

EASE's only data statistic is the item Gram ``G = XᵀX``, a sum over users, so the
federation is exact: round 1's updates carry each participant's own Gram (row-sparse
over its items), the :class:`ExactSum` aggregator adds them in float64 (integer counts:
the sum is exact) and :class:`EaseSolve` publishes ``B(λ_1)``; the summed Gram is the
durable server state of that version. Rounds 2..k carry no Gram (an update without
rows is the participant's "ready" signal, sent after it reported the base on
validation) and solve ``B(λ_r)`` from the stored Gram. Version ``r`` thus holds
``λ = ease_lambdas[r - 1]``, every version is validated (the last one by the final
evaluation), and the ``best`` deploy policy picks the λ on validation.

The solve runs in float64 on the same stored Gram, so a taken-over or replayed round
gives the same bytes. Cost at ``n`` items: the model ``B`` and the stored Gram are
``n²`` float32 each, the solve peaks at ~2.4 ``n²`` float64 and takes ~``n³`` flops
(20 000 items: ~1.6 GB per blob, ~8 GB and tens of minutes on 2 cores), hence
``EASE_MAX_ITEMS``.

Privacy: the coordinator sees each participant's Gram, i.e. its item co-occurrence
counts; with secure aggregation only the sum would be seen.

The closed form is duplicated (a few lines) in the SDK's ``recsys.ease``, which the
coordinator may not import; a test checks both agree.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from coordinator.domain.errors import ValidationFailed
from coordinator.domain.specs import ModelSpec, PrivacyPolicy
from participant_sdk.wire import Update

__all__ = ["EaseStrategy", "ExactSum", "check_ease_federation", "check_gram", "solve_ease"]

F64 = npt.NDArray[np.float64]
GRAM_STATE = "ease.gram"
INDEX_STATE = "ease.lambda_index"
# float32 holds every integer up to 2^24 exactly: the stored Gram's counts stay exact
MAX_EXACT_COUNT = float(1 << 24)


def solve_ease(gram: npt.NDArray[np.generic], lam: float) -> F64:
    """``B = I − P / diag(P)``, ``P = (G + λI)⁻¹``, zero diagonal (float64)."""
    reg = np.array(gram, dtype=np.float64)
    reg[np.diag_indices_from(reg)] += lam
    precision = np.linalg.inv(reg)
    del reg
    weights: F64 = precision / -np.diag(precision)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


def check_gram(update: Update) -> None:
    """A Gram update holds co-occurrence counts: non-negative integers within float32's
    exact range (anything else is not a Gram, and would make the sum inexact)."""
    for name, values in update.tensors.items():
        if values.size and (
            bool((values < 0).any())
            or bool((values != np.round(values)).any())
            or float(values.max()) > MAX_EXACT_COUNT
        ):
            raise ValueError(
                f"tensor '{name}' must hold co-occurrence counts: integers in [0, 2^24]"
            )


def check_ease_federation(model: ModelSpec, privacy: PrivacyPolicy) -> None:
    """Refuse what an ``ease`` federation cannot honour."""
    if model.kind != "ease":
        return
    if privacy.dp is not None:
        raise ValidationFailed(
            "privacy.dp is not supported for model kind 'ease': the exact Gram sum has "
            "no clipping or noise; leave privacy.dp out",
            field="privacy.dp",
        )


class ExactSum:
    """Sums the round's Gram rows in float64 into one ``n × n`` matrix."""

    def __init__(self, num_items: int) -> None:
        self.count = 0
        self.gram: F64 | None = None  # allocated by the first update with rows
        self.num_items = num_items

    def add(self, update: Update) -> None:
        self.count += 1
        rows = update.rows if update.rows is not None else np.arange(self.num_items)
        if rows.size == 0:
            return
        if self.gram is None:
            self.gram = np.zeros((self.num_items, self.num_items), dtype=np.float64)
        self.gram[rows] += update.tensors["ease_gram"]


class EaseStrategy:
    """The aggregation of an ``ease`` federation (same ``add``/``result`` as ``Strategy``)."""

    def __init__(self, lambdas: tuple[float, ...], num_items: int) -> None:
        self.lambdas = lambdas
        self.aggregator = ExactSum(num_items)

    def add(self, update: Update) -> None:
        self.aggregator.add(update)

    def result(
        self,
        base: Mapping[str, npt.NDArray[np.generic]],  # noqa: ARG002 - B is solved, not stepped
        state: Mapping[str, npt.NDArray[np.generic]],
        *,
        step_scale: float = 1.0,  # noqa: ARG002 - a closed-form solve has no step to shorten
    ) -> tuple[dict[str, npt.NDArray[np.float32]], dict[str, npt.NDArray[np.float32]]]:
        """``B(λ_r)`` and the state to store with it: the summed Gram and ``r - 1``."""
        stored = state.get(GRAM_STATE)
        gram = self.aggregator.gram
        if stored is not None:
            index = int(np.asarray(state[INDEX_STATE]).reshape(-1)[0]) + 1
            # a Gram arriving after round 1 (a late participant) still joins the sum
            gram = np.asarray(stored, dtype=np.float64) + (0.0 if gram is None else gram)
        else:
            index = 0
        if gram is None:
            raise ValueError("no participant sent its Gram matrix: nothing to solve")
        if float(gram.max(initial=0.0)) > MAX_EXACT_COUNT:
            raise ValueError("the summed Gram exceeds float32's exact integer range")
        lam = self.lambdas[min(index, len(self.lambdas) - 1)]
        weights = solve_ease(gram, lam).astype(np.float32)
        new_state = {
            GRAM_STATE: gram.astype(np.float32),
            INDEX_STATE: np.array([index], dtype=np.float32),
        }
        return {"ease_b": weights}, new_state
