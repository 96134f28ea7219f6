"""Server optimizers with state: FedAvgM, FedAdam and FedYogi.

Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2, with the
round's aggregated delta ``d`` (the aggregator's mean, see
:mod:`coordinator.domain.aggregation`) as the pseudo-gradient:

* FedAvgM: ``m = beta * m + d``; ``x = x + eta * m``;
* FedAdam: ``m = b1 * m + (1 - b1) * d``; ``v = b2 * v + (1 - b2) * d^2``;
  ``x = x + eta * m / (sqrt(v) + tau)``;
* FedYogi: as FedAdam with ``v = v - (1 - b2) * d^2 * sign(v - d^2)``.

``m`` starts at 0 and ``v`` at ``tau^2`` (the paper's ``v_{-1} >= tau^2``); there is no
bias correction, as in the paper. The moments are kept per coordinate, so per item row:
a row that no update touched this round (a row-sparse federation) keeps its weights
*and* its moments, as lazy Adam does for sparse gradients. Otherwise a rare item would
keep drifting on momentum it earned rounds ago, and its moments would decay while
nobody trained it. Under DP every row is touched (the noise moves them all).

The math runs in float64, element-wise, in the aggregator's fixed tensor order, so the
same updates and the same stored state give the same bytes in any process. The state
returned is stored with the new version (float32, like the weights) and handed back
next round, so the uninterrupted run, a restarted coordinator and another replica all
read the very same moments.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from coordinator.domain.aggregation import FedAvgStep
from coordinator.domain.specs import StrategySpec

__all__ = ["FedAdam", "FedAvgM", "FedYogi", "build_optimizer"]

F64 = npt.NDArray[np.float64]
State = dict[str, npt.NDArray[np.float32]]


def _row_mask(
    touched: npt.NDArray[np.bool_] | None, shape: tuple[int, ...]
) -> npt.NDArray[np.bool_]:
    """The per-row mask broadcast over a tensor of ``shape`` (rows = first axis)."""
    if touched is None:
        return np.ones(shape, dtype=np.bool_)
    if not shape:
        return np.asarray(touched).reshape(())
    return np.broadcast_to(touched.reshape(shape[:1] + (1,) * (len(shape) - 1)), shape)


def _moment(
    state: Mapping[str, npt.NDArray[np.generic]], key: str, shape: tuple[int, ...], start: float
) -> F64:
    found = state.get(key)
    if found is None:
        return np.full(shape, start, dtype=np.float64)
    if found.shape != shape:  # our own blob: a mismatch is a bug, never broadcast it
        raise ValueError(f"server state {key!r} has shape {found.shape}, expected {shape}")
    return np.asarray(found, dtype=np.float64)


class FedAvgM:
    """FedAvg with server momentum: ``m = beta * m + d``, ``x = x + eta * m``."""

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9) -> None:
        self.server_lr = server_lr
        self.momentum = momentum

    def step(
        self,
        name: str,
        base: npt.NDArray[np.generic],
        delta: F64,
        state: Mapping[str, npt.NDArray[np.generic]],
        touched: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[F64, State]:
        x = np.asarray(base, dtype=np.float64)
        rows = _row_mask(touched, x.shape)
        m = _moment(state, f"m.{name}", x.shape, 0.0)
        m = np.where(rows, self.momentum * m + delta, m)
        new = np.where(rows, x + self.server_lr * m, x)
        return new, {f"m.{name}": m.astype(np.float32)}


class FedAdam:
    """FedAdam (Reddi et al. 2021): an Adam step on the aggregated delta, per coordinate."""

    def __init__(
        self,
        server_lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        self.server_lr = server_lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau

    def second_moment(self, v: F64, delta: F64) -> F64:
        """Adam's ``v = b2 * v + (1 - b2) * d^2``."""
        result: F64 = self.beta2 * v + (1.0 - self.beta2) * np.square(delta)
        return result

    def step(
        self,
        name: str,
        base: npt.NDArray[np.generic],
        delta: F64,
        state: Mapping[str, npt.NDArray[np.generic]],
        touched: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[F64, State]:
        x = np.asarray(base, dtype=np.float64)
        rows = _row_mask(touched, x.shape)
        m = _moment(state, f"m.{name}", x.shape, 0.0)
        v = _moment(state, f"v.{name}", x.shape, self.tau**2)
        m = np.where(rows, self.beta1 * m + (1.0 - self.beta1) * delta, m)
        v = np.where(rows, self.second_moment(v, delta), v)
        new = np.where(rows, x + self.server_lr * m / (np.sqrt(v) + self.tau), x)
        return new, {
            f"m.{name}": m.astype(np.float32),
            f"v.{name}": v.astype(np.float32),
        }


class FedYogi(FedAdam):
    """FedYogi (Reddi et al. 2021): FedAdam whose ``v`` grows additively, so it adapts
    less abruptly when the delta's magnitude changes."""

    def second_moment(self, v: F64, delta: F64) -> F64:
        """Yogi's ``v = v - (1 - b2) * d^2 * sign(v - d^2)`` (stays >= tau^2 > 0)."""
        squared = np.square(delta)
        result: F64 = v - (1.0 - self.beta2) * squared * np.sign(v - squared)
        return result


def build_optimizer(spec: StrategySpec) -> FedAvgStep | FedAvgM | FedAdam:
    """The server optimizer a ``StrategySpec`` names, with its hyperparameters."""
    if spec.name == "fedavg":
        return FedAvgStep(spec.server_lr)
    if spec.name == "fedavgm":
        return FedAvgM(spec.server_lr, spec.server_momentum)
    adaptive = FedAdam if spec.name == "fedadam" else FedYogi
    return adaptive(spec.server_lr, spec.beta1, spec.beta2, spec.tau)
