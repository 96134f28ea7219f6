"""Confidence-weighted matrix factorisation (implicit ALS), federated as in FCF.

The model of Hu, Koren and Volinsky (2008), "Collaborative Filtering for Implicit
Feedback Datasets": every (user, item) cell has a preference ``p_ui`` (1 if the user
interacted with the item, else 0) and a confidence ``c_ui`` (``1`` for a cell without
interaction, :func:`confidence` of the interaction's strength otherwise). The score is
``s(u, i) = x_u · y_i`` and the loss, over **all** cells, is::

    L = Σ_u Σ_i c_ui (p_ui - x_u·y_i)²  +  reg · (Σ_u w_u |x_u|² + Σ_i w_i |y_i|²)

with frequency-scaled regularisation (Rendle et al. 2021, "Revisiting the Performance
of iALS on Item Recommendation Benchmarks"): ``w_u = Σ_i c_ui`` and ``w_i = Σ_u c_ui``,
the total confidence of the user's row and the item's column. Scaling the penalty with
the data it competes against makes ``reg`` independent of the data set's size, and
``w_i`` is a sum over users, so participants' shares of it add up to the central one.

Federated as in FCF (Ammad-ud-din et al. 2019): the global model is the item side only,
``item_factors`` (``item_bias`` stays at its initial 0: the model has no bias). One round
on a participant is :meth:`IALSTrainer.train_round`:

1. Solve each local user's factors in closed form given the round's item factors
   (float64): ``x_u = (YᵀY + Yᵀ(C_u - I)Y + reg·w_u·I)⁻¹ YᵀC_u p_u``. ``YᵀY`` is computed
   once, so a user costs only its own interactions (the iALS trick).
2. The gradient of ``L/2`` for every item, over the participant's users only:
   ``g_i = (Σ_u x_u x_uᵀ) y_i + Σ_{u∈R_i} ((c_ui - 1) x_u·y_i - c_ui) x_u + reg·w_i·y_i``.
   Every item gets gradient (the unobserved cells push all scores toward 0), so the
   upload is **dense**.
3. The item delta is that gradient preconditioned by the participant's own per-item
   Hessian ``H_i = Σ_u x_u x_uᵀ + Σ_{u∈R_i} (c_ui - 1) x_u x_uᵀ + reg·w_i·I``:
   ``Δy_i = -item_step · H_i⁻¹ g_i``. With ``item_step`` 1 this is the participant's
   closed-form ALS item solve, so one participant holding every user (the centralized
   run) is exact alternating least squares. With users split IID over silos each
   participant's ``H_i`` and ``g_i`` are about ``1/K`` of the central ones, so the
   coordinator's FedAvg mean of the deltas approximates the central ALS item step; no
   learning rate needs tuning to the data's scale. The preconditioner is the
   participant's own, so with very few users per participant (cross-device) an item a
   participant never saw is pulled toward 0 by it; that setting is not what this
   step is built for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .data import Interactions
from .model import LocalUpdate, PrivateUserFactors

__all__ = ["IALSConfig", "IALSTrainer", "confidence", "item_gradient", "solve_users"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Systems solved per batched call: bounds memory at BLOCK * dim² float64.
BLOCK = 512


def confidence(strengths: F64, alpha: float) -> F64:
    """Confidence of observed cells: ``1 + alpha * log1p(max(strength, 0))``.

    The log keeps heavy-tailed strengths (play counts in the thousands) from drowning
    every other interaction, while ratings 1-5 still spread over ``log1p`` 0.7-1.8.
    A negative strength counts as 0 (confidence 1): any interaction is a positive.
    """
    s = np.asarray(strengths, dtype=np.float64)
    s = np.where(np.isfinite(s), np.maximum(s, 0.0), 0.0)
    return 1.0 + alpha * np.log1p(s)


@dataclass(frozen=True)
class IALSConfig:
    """Hyperparameters of local implicit-ALS training.

    Attributes
    ----------
    dim:
        Number of latent factors.
    reg:
        Regularisation, relative to each row's and column's total confidence (see the
        module docstring), so it does not depend on the data set's size.
    alpha:
        Confidence slope: an observed cell weighs ``1 + alpha * log1p(strength)``
        against 1 for each unobserved cell (strength 1 when the data has none). The
        default 3 was the best of 3, 10 and 30 on ML-100K validation (ratings as strength);
        it is not yet checked on count data.
    epochs:
        Local alternations (user solve, then item step) per call of
        :meth:`IALSTrainer.train_round`.
    item_step:
        Fraction of the preconditioned item step taken (1 = the local closed-form solve).
    seed:
        Seeds the (unused until the first solve) initial user factors.
    """

    dim: int = 64
    reg: float = 0.01
    alpha: float = 3.0
    epochs: int = 1
    item_step: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim <= 0:
            raise ValueError(f"dim must be > 0, got {self.dim}")
        if not self.reg > 0.0:
            raise ValueError(f"reg must be > 0 (it keeps every solve well posed), got {self.reg}")
        if not self.alpha >= 0.0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not 0.0 < self.item_step <= 1.0:
            raise ValueError(f"item_step must be in (0, 1], got {self.item_step}")

    def replace(self, **changes: Any) -> IALSConfig:
        """Return a copy with some fields changed."""
        values = asdict(self)
        values.update(changes)
        return IALSConfig(**values)


def _by_key(keys: IntArray, n: int) -> tuple[IntArray, IntArray]:
    """Stable order of ``keys`` and the start offset of each key ``0..n`` in it."""
    order = np.argsort(keys, kind="stable")
    starts = np.searchsorted(keys[order], np.arange(n + 1))
    return order, starts.astype(np.int64)


def _solve(lhs: F64, rhs: F64) -> F64:
    """Batched SPD solve; reg > 0 makes every system positive definite."""
    solution = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    if not np.isfinite(solution).all():
        raise FloatingPointError("the ALS solve produced a non-finite value")
    return np.asarray(solution, dtype=np.float64)


def solve_users(item_factors: F64, train: Interactions, num_users: int, config: IALSConfig) -> F64:
    """Closed-form user factors given item factors: one ALS half-step (float64).

    A user without interactions gets the zero vector (its right-hand side is 0).
    """
    y = np.asarray(item_factors, dtype=np.float64)
    num_items, dim = y.shape
    conf = confidence(train.strengths, config.alpha)
    gram = y.T @ y
    order, starts = _by_key(train.users, num_users)
    x = np.zeros((num_users, dim), dtype=np.float64)
    eye = np.eye(dim)
    for lo in range(0, num_users, BLOCK):
        hi = min(lo + BLOCK, num_users)
        lhs = np.empty((hi - lo, dim, dim))
        rhs = np.zeros((hi - lo, dim))
        for k, u in enumerate(range(lo, hi)):
            rows = order[starts[u] : starts[u + 1]]
            yu = y[train.items[rows]]
            cu = conf[rows]
            weight = num_items + float(np.sum(cu - 1.0))  # w_u = Σ_i c_ui
            lhs[k] = gram + (yu.T * (cu - 1.0)) @ yu + config.reg * weight * eye
            rhs[k] = cu @ yu
        x[lo:hi] = _solve(lhs, rhs)
    return x


def _item_systems(
    user_factors: F64,
    item_factors: F64,
    train: Interactions,
    config: IALSConfig,
    items: range,
    order: IntArray,
    starts: IntArray,
    gram: F64,
    conf: F64,
) -> tuple[F64, F64]:
    """Local Hessians ``H_i`` and gradients ``g_i`` of ``L/2`` for a block of items."""
    x, y = user_factors, item_factors
    num_users, dim = x.shape
    eye = np.eye(dim)
    hess = np.empty((len(items), dim, dim))
    grad = np.empty((len(items), dim))
    for k, i in enumerate(items):
        rows = order[starts[i] : starts[i + 1]]
        xi = x[train.users[rows]]
        ci = conf[rows]
        weight = num_users + float(np.sum(ci - 1.0))  # this participant's share of w_i
        hess[k] = gram + (xi.T * (ci - 1.0)) @ xi + config.reg * weight * eye
        # H_i y_i - Σ c_ui x_u: the observed cells' (c-1)(x·y) x terms are inside H_i y_i
        grad[k] = hess[k] @ y[i] - ci @ xi
    return hess, grad


def item_gradient(
    user_factors: F64, item_factors: F64, train: Interactions, config: IALSConfig
) -> F64:
    """Gradient of ``L/2`` over the given users, for every item: ``(num_items, dim)``.

    Uses ``Σ_u x_u x_uᵀ`` for the unobserved cells, so the cost is that of the
    observed cells plus one ``dim x dim`` product per item.
    """
    x = np.asarray(user_factors, dtype=np.float64)
    y = np.asarray(item_factors, dtype=np.float64)
    order, starts = _by_key(train.items, y.shape[0])
    gram = x.T @ x
    conf = confidence(train.strengths, config.alpha)
    grad = np.empty_like(y)
    for lo in range(0, y.shape[0], BLOCK):
        block = range(lo, min(lo + BLOCK, y.shape[0]))
        _, grad[lo : block.stop] = _item_systems(
            x, y, train, config, block, order, starts, gram, conf
        )
    return grad


def _item_step(
    user_factors: F64, item_factors: F64, train: Interactions, config: IALSConfig
) -> F64:
    """``-item_step · H_i⁻¹ g_i`` for every item (see the module docstring)."""
    x, y = user_factors, item_factors
    order, starts = _by_key(train.items, y.shape[0])
    gram = x.T @ x
    conf = confidence(train.strengths, config.alpha)
    step = np.empty_like(y)
    for lo in range(0, y.shape[0], BLOCK):
        block = range(lo, min(lo + BLOCK, y.shape[0]))
        hess, grad = _item_systems(x, y, train, config, block, order, starts, gram, conf)
        step[lo : block.stop] = -config.item_step * _solve(hess, grad)
    return step


def _loss(user_factors: F64, item_factors: F64, train: Interactions, config: IALSConfig) -> float:
    """Mean weighted squared error per local cell (diagnostic; regularisation left out)."""
    x, y = user_factors, item_factors
    if x.shape[0] == 0:
        return 0.0
    conf = confidence(train.strengths, config.alpha)
    s = np.einsum("nd,nd->n", x[train.users], y[train.items])
    # every cell as if unobserved (Σ_u x_uᵀ YᵀY x_u), corrected on the observed cells
    total = float(np.einsum("ud,de,ue->", x, y.T @ y, x))
    total += float(np.sum(conf * (1.0 - s) ** 2 - s**2))
    return total / float(x.shape[0] * y.shape[0])


class IALSTrainer(PrivateUserFactors):
    """Local implicit-ALS trainer that owns the private user factors.

    The public shape mirrors :class:`~participant_sdk.recsys.model.BPRTrainer`, so a
    participant or a simulation can hold either.

    Parameters
    ----------
    num_users:
        Number of local users (indices ``0..num_users-1`` of the local interactions).
    num_items:
        Catalog size (rows of the global item tensors).
    config:
        Training hyperparameters.
    """

    def __init__(self, *, num_users: int, num_items: int, config: IALSConfig) -> None:
        self.config = config
        self.num_users = num_users
        self.num_items = num_items
        self.user_factors: F32 = np.zeros((num_users, config.dim), dtype=np.float32)
        self.steps = 0

    def _check(self, base: dict[str, F32] | dict[str, npt.NDArray[np.generic]]) -> F64:
        q = np.asarray(base["item_factors"], dtype=np.float64)
        b = np.asarray(base["item_bias"])
        if q.shape != (self.num_items, self.config.dim) or b.shape != (self.num_items,):
            raise ValueError(
                f"base tensors must be ({self.num_items}, {self.config.dim}) and "
                f"({self.num_items},), got {q.shape} and {b.shape}"
            )
        if not np.isfinite(q).all():
            raise ValueError("base item_factors contain NaN or Inf")
        return q

    def fit_users(
        self,
        item_tensors: dict[str, F32] | dict[str, npt.NDArray[np.generic]],
        train: Interactions,
    ) -> None:
        """Solve the user factors for these item tensors (before scoring a new version)."""
        y = self._check(item_tensors)
        self.user_factors = solve_users(y, train, self.num_users, self.config).astype(np.float32)

    def train_round(
        self,
        base: dict[str, F32] | dict[str, npt.NDArray[np.generic]],
        train: Interactions,
        *,
        epochs: int | None = None,
        learning_rate: float | None = None,
        update_items: bool = True,
    ) -> LocalUpdate:
        """Alternate user solves and item steps from the round's base; return the delta.

        Parameters
        ----------
        base:
            ``{"item_factors": (num_items, dim), "item_bias": (num_items,)}``; not modified.
        train:
            Local training interactions (user indices local, items = catalog rows).
        epochs:
            Overrides ``config.epochs`` for this call.
        learning_rate:
            Overrides ``config.item_step`` for this call.
        update_items:
            ``False`` solves the user factors only and returns a zero delta.
        """
        base_q = self._check(base)
        base_b = np.asarray(base["item_bias"], dtype=np.float32)
        if train.users.size and int(train.users.max()) >= self.num_users:
            raise ValueError("training data has user indices beyond num_users")
        cfg = self.config if learning_rate is None else self.config.replace(item_step=learning_rate)
        n_epochs = cfg.epochs if epochs is None else epochs
        self.steps += 1
        y = base_q.copy()
        x = self.user_factors.astype(np.float64)
        loss = 0.0
        if len(train):
            for _ in range(max(n_epochs, 1) if update_items else 1):
                x = solve_users(y, train, self.num_users, cfg)
                loss = _loss(x, y, train, cfg)
                if update_items and n_epochs > 0:
                    y = y + _item_step(x, y, train, cfg)
        self.user_factors = x.astype(np.float32)
        q = y.astype(np.float32)
        if not np.isfinite(q).all():
            raise FloatingPointError("local ALS produced non-finite item factors")
        delta = {
            "item_factors": (y - base_q).astype(np.float32),
            "item_bias": np.zeros_like(base_b),
        }
        return LocalUpdate(
            item_factors=q,
            item_bias=base_b.copy(),
            delta=delta,
            # every item gets gradient from the unobserved cells: the update is dense
            rows=np.arange(self.num_items, dtype=np.int64),
            num_examples=len(train),
            loss=loss,
        )
