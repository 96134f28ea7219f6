"""EASE's solve at catalog scale: ``B(λ)`` from a Gram, in place, optionally pruned.

``P = (G + λI)⁻¹``, ``B = I − P / diag(P)`` with a zero diagonal (Steck, WWW 2019). The
coordinator solves it on the summed Gram, and the simulation's centralized baseline and
recipe search call the same function, so federated and centralized ``B`` are the same
bytes by construction.

**How.** A Cholesky factorisation and inverse (LAPACK ``potrf``/``potri`` through scipy)
overwrite one ``n × n`` work array: ~``n³`` flops, about a third of ``numpy.linalg.inv``'s
LU with an identity right-hand side, and no second ``n²`` temporary. An
eigendecomposition ``G = Q diag(s) Qᵀ`` would give every ``P(λ)`` from one factorisation,
but measured at 3 000 items it costs ~10 Cholesky inverses (and ``P(λ) = Q D Qᵀ`` is
itself ~``n³``), so it never pays for the few λ's a federation publishes
(``bench/ease_solve.py``).

**Precision.** float64 up to :data:`FLOAT64_MAX_ITEMS` items; float32 above it, which halves
the memory and the time (the Gram's counts are exact in float32 up to 2^24, and float32's
~1e-7 relative error times the condition number ``(s_max + λ)/λ`` stays far below the gaps
between the scores that rank items).

**Pruning.** ``top_k`` keeps, for each target item ``j`` (column ``j`` of ``B``), the
``k`` source items with the largest ``|B_ij|``: the model becomes two ``n × k`` float32
tensors (``ease_b_index``: the source items, exact integers; ``ease_b_value``: their
weights), ``8 n k`` bytes instead of ``4 n²`` (18 000 items, ``k`` 512: 74 MB instead of
1.3 GB). Columns are pruned in blocks, so the selection adds ~``n × block`` temporaries,
not ``n²``.

**Cost model** (:func:`solve_cost`): peak bytes ≈ the Gram as given plus one ``n²`` work
array of the solve's dtype plus the result (``4 n²`` dense float32, ``8 n k`` pruned);
CPU seconds ≈ ``n³`` / the rate measured on this project's 2-core machine
(:data:`FLOPS_PER_CPU_SECOND`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.linalg import lapack

__all__ = [
    "FLOAT64_MAX_ITEMS",
    "Progress",
    "INDEX_TENSOR",
    "MODEL_TENSOR",
    "VALUE_TENSOR",
    "SolveCost",
    "Solver",
    "ease_model",
    "ease_precision",
    "prune_columns",
    "solve_cost",
    "solve_dtype",
]

MODEL_TENSOR = "ease_b"
INDEX_TENSOR = "ease_b_index"
VALUE_TENSOR = "ease_b_value"
# above this, the solve runs in float32 (half the memory and time; see the module doc)
FLOAT64_MAX_ITEMS = 5_000
# Cholesky-inverse flops (~n³) per CPU second, measured by bench/ease_solve.py on the
# project's 2-core machine (CPU seconds: comparable under load, unlike wall time)
FLOPS_PER_CPU_SECOND = {np.dtype(np.float64): 23e9, np.dtype(np.float32): 24e9}
# columns pruned at once: bounds the selection's temporaries to n × PRUNE_BLOCK
PRUNE_BLOCK = 512
# rows symmetrised at once after potri (which fills one triangle)
SYMMETRISE_BLOCK = 1024


def solve_dtype(num_items: int) -> np.dtype[np.floating]:
    """The precision of the solve at this catalog size."""
    return np.dtype(np.float64 if num_items <= FLOAT64_MAX_ITEMS else np.float32)


Progress = Callable[[str], None]
# (Gram n × n, lambda, top_k) -> the model's tensors: ease_model, here or in a child process
Solver = Callable[[npt.NDArray[np.float32], float, int | None], dict[str, npt.NDArray[np.float32]]]


def _no_progress(_stage: str) -> None:
    pass


def ease_precision(
    gram: npt.NDArray[np.generic], lam: float, *, progress: Progress = _no_progress
) -> npt.NDArray[np.floating]:
    """``P = (G + λI)⁻¹``, symmetric, in :func:`solve_dtype` precision (one ``n²`` array).

    ``progress`` is told each stage as it starts (``factorising``, ``inverting``,
    ``symmetrising``). ``gram`` is left unchanged. Raises ``ValueError`` for a non-square
    or non-finite Gram, a non-positive λ, or a matrix LAPACK finds not positive definite.
    """
    gram = np.asarray(gram)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"the Gram matrix must be square, got shape {gram.shape}")
    if not (np.isfinite(lam) and lam > 0):
        raise ValueError(f"lambda must be a finite positive number, got {lam}")
    n = gram.shape[0]
    # the Gram is symmetric: its transpose is the Fortran-ordered array LAPACK overwrites
    work = np.array(gram, dtype=solve_dtype(n), order="C").T
    if not np.isfinite(work).all():
        raise ValueError("the Gram matrix contains NaN or Inf")
    work[np.diag_indices(n)] += lam
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (work,))
    progress("factorising")
    factor, info = potrf(work, lower=True, overwrite_a=True, clean=False)
    if info != 0:
        raise ValueError(f"G + lambda I is not positive definite (potrf info {info})")
    progress("inverting")
    inverse, info = potri(factor, lower=True, overwrite_c=True)
    if info != 0:
        raise ValueError(f"the Cholesky inverse failed (potri info {info})")
    # potri filled the lower triangle (Fortran order), i.e. the upper one of the C view
    view = inverse.T
    progress("symmetrising")
    for first in range(0, n, SYMMETRISE_BLOCK):
        last = min(n, first + SYMMETRISE_BLOCK)
        view[first:last, :first] = view[:first, first:last].T
        block = view[first:last, first:last]
        block[np.tril_indices(last - first, -1)] = block.T[np.tril_indices(last - first, -1)]
    precision: npt.NDArray[np.floating] = view
    return precision


def ease_model(
    gram: npt.NDArray[np.generic],
    lam: float,
    *,
    top_k: int | None = None,
    progress: Progress = _no_progress,
) -> dict[str, npt.NDArray[np.float32]]:
    """EASE's model tensors for ``λ``: ``{"ease_b": B}`` (dense float32), or with ``top_k``
    the pruned ``{"ease_b_index", "ease_b_value"}`` (``n × k`` float32 each).
    ``progress`` is told each stage as it starts (see :func:`ease_precision`; then
    ``pruning`` or ``scaling``)."""
    precision = ease_precision(gram, lam, progress=progress)
    n = precision.shape[0]
    if top_k is not None:
        progress("pruning")
        return prune_columns(precision, top_k)
    progress("scaling")
    # B_ij = -P_ij / P_jj off the diagonal, in place (P is C-ordered and symmetric)
    precision /= -np.diag(precision).copy()[None, :]
    precision[np.diag_indices(n)] = 0.0
    dense: npt.NDArray[np.float32] = precision.astype(np.float32, copy=False)
    return {MODEL_TENSOR: dense}


def prune_columns(
    precision: npt.NDArray[np.floating], top_k: int
) -> dict[str, npt.NDArray[np.float32]]:
    """For each column ``j`` of ``B = −P / diag(P)``, the ``top_k`` off-diagonal entries of
    largest magnitude, ascending by source item (a deterministic selection: the same
    ``precision`` always gives the same bytes).

    ``precision`` must be symmetric (column ``j`` is read as row ``j``). Returns
    ``ease_b_index`` (source items as exact float32 integers) and ``ease_b_value``
    (``B_ij``), both ``n × k``, row ``j`` describing column ``j``.
    """
    n = precision.shape[0]
    if not 1 <= top_k < n:
        raise ValueError(f"top_k must be in [1, {n - 1}] for {n} items, got {top_k}")
    index = np.empty((n, top_k), dtype=np.float32)
    value = np.empty((n, top_k), dtype=np.float32)
    for first in range(0, n, PRUNE_BLOCK):
        last = min(n, first + PRUNE_BLOCK)
        columns = np.arange(first, last)
        block = precision[first:last]  # rows of P = columns of P (symmetric)
        diag = block[np.arange(last - first), columns].copy()
        magnitude = np.abs(block)  # |B_ij| ∝ |P_ij| within a column
        magnitude[np.arange(last - first), columns] = -1.0  # never keep the diagonal
        # a linear-time selection per column (a full sort of n² entries costs minutes)
        chosen = np.argpartition(-magnitude, top_k - 1, axis=1)[:, :top_k]
        chosen.sort(axis=1)
        picked = np.take_along_axis(block, chosen, axis=1)
        index[first:last] = chosen
        value[first:last] = picked / -diag[:, None]
    return {INDEX_TENSOR: index, VALUE_TENSOR: value}


@dataclass(frozen=True)
class SolveCost:
    """What one solve of ``n`` items costs, by the module's cost model."""

    num_items: int
    dtype: str
    peak_bytes: int
    cpu_seconds: float
    model_bytes: int


def solve_cost(num_items: int, top_k: int | None = None, *, gram_bytes: int = 4) -> SolveCost:
    """Peak memory, CPU seconds and model size of one solve (``gram_bytes``: the width of
    the Gram handed in, float32 by default)."""
    dtype = solve_dtype(num_items)
    n2 = num_items * num_items
    model_bytes = 4 * n2 if top_k is None else 8 * num_items * top_k
    # the Gram, the work array, and the dense float32 copy or the pruning's block
    extra = model_bytes if top_k is None else 3 * 8 * num_items * PRUNE_BLOCK + model_bytes
    peak = gram_bytes * n2 + dtype.itemsize * n2 + extra
    seconds = float(num_items) ** 3 / FLOPS_PER_CPU_SECOND[dtype]
    return SolveCost(num_items, dtype.name, int(peak), seconds, model_bytes)
