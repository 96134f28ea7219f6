"""Federated EASE (Steck, WWW 2019): an exact sum of Grams, then one solve per lambda.

EASE's only data statistic is the item Gram ``G = XᵀX``, a sum over users, so the
federation is exact: round 1's updates carry each participant's own Gram (its non-zero
entries, listed row-sparse over the flattened ``n²`` matrix), the :class:`ExactSum`
aggregator adds them (integer counts below 2^24: exact in float32) and
:class:`EaseStrategy` publishes ``B(λ_1)``; the summed Gram, stored sparse (its non-zero
entries), is the durable server state of that version. Rounds 2..k carry no Gram (an
update without rows is the participant's "ready" signal, sent after it reported the base
on validation) and solve ``B(λ_r)`` from the stored Gram. Version ``r`` thus holds
``λ = ease_lambdas[r - 1]``, every version is validated (the last one by the final
evaluation), and the ``best`` deploy policy picks the λ on validation.

The solve is :func:`coordinator.domain.ease_solve.ease_model` (a deterministic in-place
Cholesky inverse, pruned to ``ease_top_k`` entries per column when the spec says so),
so a taken-over or replayed round gives the same bytes, and the simulation's centralized
baseline, which calls the same function on the same summed Gram, gets the same ``B``.
Cost at ``n`` items: the summed Gram (``4 n²`` bytes) and one ``n²`` work array while a
round is aggregated (float64 up to 5 000 items, float32 above: ~2.8 GB at 18 000), ~``n³``
flops (~80 CPU seconds at 18 000 items; ``bench/ease_solve.py``); the stored state
and the model are small (the Gram's non-zeros; ``8 n k`` bytes pruned).

Privacy: the coordinator sees each participant's Gram, i.e. its item co-occurrence
counts; with secure aggregation only the sum would be seen (not wired for ``ease`` yet).

The closed form is duplicated (a few lines) in the SDK's ``recsys.ease``, which the
coordinator may not import; a test checks both agree.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from coordinator.domain.ease_solve import Solver, ease_model, solve_cost
from coordinator.domain.errors import ValidationFailed
from coordinator.domain.specs import ModelSpec, PrivacyPolicy
from participant_sdk.wire import Update

__all__ = [
    "EaseStrategy",
    "ExactSum",
    "check_ease_federation",
    "check_gram",
    "max_items_within",
]

F32 = npt.NDArray[np.float32]
# the summed Gram as server state: its non-zero entries (flat indices, counts)
GRAM_KEYS_STATE = "ease.gram_keys"
GRAM_COUNTS_STATE = "ease.gram_counts"
# the dense n × n float32 Gram of versions stored before the sparse state (still read)
DENSE_GRAM_STATE = "ease.gram"
INDEX_STATE = "ease.lambda_index"
# float32 holds every integer up to 2^24 exactly: the stored Gram's counts stay exact
MAX_EXACT_COUNT = float(1 << 24)


def check_gram(update: Update, num_items: int) -> None:
    """A Gram update holds co-occurrence counts: non-negative integers within float32's
    exact range, symmetric (count ``(i, j)`` = count ``(j, i)``). Anything else is not a
    Gram, and would make the sum inexact or the solve meaningless."""
    for name, values in update.tensors.items():
        if values.size and (
            bool((values < 0).any())
            or bool((values != np.round(values)).any())
            or float(values.max()) > MAX_EXACT_COUNT
        ):
            raise ValueError(
                f"tensor '{name}' must hold co-occurrence counts: integers in [0, 2^24]"
            )
        keys = update.rows if update.rows is not None else np.flatnonzero(values).astype(np.int64)
        flat = values.reshape(-1) if update.rows is not None else values.reshape(-1)[keys]
        mirrored = (keys % num_items) * num_items + keys // num_items
        order = np.argsort(mirrored, kind="stable")
        if not (
            np.array_equal(mirrored[order], np.sort(keys)) and np.array_equal(flat[order], flat)
        ):
            raise ValueError(
                f"tensor '{name}' must be a symmetric Gram: the entry (i, j) of every "
                "(j, i), with the same count"
            )


def check_ease_federation(
    model: ModelSpec, privacy: PrivacyPolicy, *, memory_budget_bytes: int | None = None
) -> None:
    """Refuse what an ``ease`` federation cannot honour: DP, or a solve whose peak memory
    (:func:`~coordinator.domain.ease_solve.solve_cost`) exceeds the coordinator's budget
    (``FEDREC_EASE_MEMORY_BUDGET_BYTES``)."""
    if model.kind != "ease":
        return
    if memory_budget_bytes is not None:
        cost = solve_cost(model.num_items, model.ease_top_k)
        if cost.peak_bytes > memory_budget_bytes:
            fits = max_items_within(memory_budget_bytes, model.ease_top_k)
            raise ValidationFailed(
                f"an ease solve of {model.num_items} items needs ~{cost.peak_bytes / 2**30:.2f} "
                f"GiB ({cost.dtype}, "
                + (f"pruned to ease_top_k {model.ease_top_k}" if model.ease_top_k else "dense B")
                + f"), over this coordinator's budget of {memory_budget_bytes / 2**30:.2f} GiB "
                f"(FEDREC_EASE_MEMORY_BUDGET_BYTES): use at most {fits} items, or raise the "
                "budget",
                field="model.num_items",
                needed_bytes=cost.peak_bytes,
                budget_bytes=memory_budget_bytes,
                max_items=fits,
            )
    if privacy.dp is not None:
        raise ValidationFailed(
            "privacy.dp is not supported for model kind 'ease': the exact Gram sum has "
            "no clipping or noise; leave privacy.dp out",
            field="privacy.dp",
        )


class ExactSum:
    """Sums the round's Gram entries into one flat ``n²`` float32 matrix (exact: integer
    counts below 2^24, checked when the result is built)."""

    def __init__(self, num_items: int) -> None:
        self.count = 0
        self.gram: F32 | None = None  # allocated by the first update with entries
        self.num_items = num_items

    def add(self, update: Update) -> None:
        self.count += 1
        values = update.tensors["ease_gram"].reshape(-1)
        if values.size == 0:
            return
        if self.gram is None:
            self.gram = np.zeros(self.num_items * self.num_items, dtype=np.float32)
        if update.rows is None:  # a dense upload: every entry
            self.gram += values
        else:  # distinct flat indices (the wire checks they ascend)
            self.gram[update.rows] += values


def max_items_within(budget_bytes: int, top_k: int | None) -> int:
    """The largest catalog whose solve fits ``budget_bytes`` (0 if none does)."""
    low, high = 0, 1 << 20
    while low < high:  # the peak grows with the item count: bisect, ~20 steps
        middle = (low + high + 1) // 2
        k = top_k if top_k is not None and top_k < middle else None
        if solve_cost(middle, k).peak_bytes <= budget_bytes:
            low = middle
        else:
            high = middle - 1
    return low


def _solve_here(gram: npt.NDArray[np.float32], lam: float, top_k: int | None) -> dict[str, F32]:
    return ease_model(gram, lam, top_k=top_k)


class EaseStrategy:
    """The aggregation of an ``ease`` federation (same ``add``/``result`` as ``Strategy``).

    ``solver`` runs the solve (:mod:`coordinator.domain.ease_process`: a child process
    for large catalogs); by default :func:`ease_model` in this thread.
    """

    def __init__(
        self,
        lambdas: tuple[float, ...],
        num_items: int,
        *,
        top_k: int | None = None,
        solver: Solver = _solve_here,
    ) -> None:
        self.lambdas = lambdas
        self.top_k = top_k
        self.solver = solver
        self.aggregator = ExactSum(num_items)

    def add(self, update: Update) -> None:
        self.aggregator.add(update)

    def result(
        self,
        base: Mapping[str, npt.NDArray[np.generic]],  # noqa: ARG002 - B is solved, not stepped
        state: Mapping[str, npt.NDArray[np.generic]],
        *,
        step_scale: float = 1.0,  # noqa: ARG002 - a closed-form solve has no step to shorten
    ) -> tuple[dict[str, F32], dict[str, npt.NDArray[np.generic]]]:
        """``B(λ_r)`` and the state to store with it: the summed Gram and ``r - 1``."""
        n = self.aggregator.num_items
        gram = self.aggregator.gram
        if INDEX_STATE in state:
            index = int(np.asarray(state[INDEX_STATE]).reshape(-1)[0]) + 1
            # a Gram arriving after round 1 (a late participant) still joins the sum
            gram = _stored_gram(state, n) if gram is None else gram + _stored_gram(state, n)
        else:
            index = 0
        if gram is None:
            raise ValueError("no participant sent its Gram matrix: nothing to solve")
        if float(gram.max(initial=0.0)) > MAX_EXACT_COUNT:
            raise ValueError("the summed Gram exceeds float32's exact integer range")
        lam = self.lambdas[min(index, len(self.lambdas) - 1)]
        keys = np.flatnonzero(gram)
        new_state: dict[str, npt.NDArray[np.generic]] = {
            GRAM_KEYS_STATE: keys.astype(np.int64),
            GRAM_COUNTS_STATE: gram[keys],
            INDEX_STATE: np.array([index], dtype=np.float32),
        }
        model = self.solver(gram.reshape(n, n), lam, self.top_k)
        return model, new_state


def _stored_gram(state: Mapping[str, npt.NDArray[np.generic]], n: int) -> F32:
    """The summed Gram of the previous version's state, flat ``n²`` float32."""
    if DENSE_GRAM_STATE in state:
        return np.asarray(state[DENSE_GRAM_STATE], dtype=np.float32).reshape(-1).copy()
    gram = np.zeros(n * n, dtype=np.float32)
    keys = np.asarray(state[GRAM_KEYS_STATE], dtype=np.int64)
    gram[keys] = np.asarray(state[GRAM_COUNTS_STATE], dtype=np.float32)
    return gram
