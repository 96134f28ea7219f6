"""The strategy interface: an aggregator and a server optimizer, chosen separately.

A round's aggregation streams the round's updates through the *aggregator*, which
yields one delta per tensor, then the *server optimizer* turns base + delta into the
new model. A server optimizer may keep durable state between rounds (FedAvgM's
momentum, FedAdam's moments): it receives the state stored with the base version and
returns the state to store with the new one (as a safetensors blob, see
``ModelVersion.server_state_sha256``), so a restarted or replaced coordinator resumes it.

Today: aggregator ``mean`` (:class:`~coordinator.domain.aggregation.WeightedMean`) and
server optimizers ``fedavg`` (:class:`~coordinator.domain.aggregation.FedAvgStep`,
stateless), ``fedavgm``, ``fedadam`` and ``fedyogi``
(:mod:`coordinator.domain.server_optimizers`, per-row moments). The aggregator also
says which rows the round touched, so an optimizer leaves the others, and their state,
alone. Robust aggregators plug in here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from coordinator.domain.aggregation import WeightedMean
from coordinator.domain.privacy import DPAggregation
from coordinator.domain.server_optimizers import build_optimizer
from coordinator.domain.specs import StrategySpec
from participant_sdk.wire import TensorSpec, Update

__all__ = ["Aggregator", "ServerOptimizer", "ServerState", "Strategy", "build_strategy"]

ServerState = dict[str, npt.NDArray[np.float32]]


class Aggregator(Protocol):
    """Folds a round's updates, one at a time, into one delta per tensor."""

    count: int

    def add(self, update: Update) -> None: ...

    def mean_deltas(self) -> Iterator[tuple[str, npt.NDArray[np.float64]]]: ...

    def touched(self, name: str) -> npt.NDArray[np.bool_]:
        """Per row of tensor ``name``: did this round move it (every row under DP)?"""
        ...


class ServerOptimizer(Protocol):
    """Applies the aggregated delta of one tensor to the base model."""

    def step(
        self,
        name: str,
        base: npt.NDArray[np.generic],
        delta: npt.NDArray[np.float64],
        state: Mapping[str, npt.NDArray[np.generic]],
        touched: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[npt.NDArray[np.float64], dict[str, npt.NDArray[np.float32]]]:
        """Return the tensor's new weights (float64: the strategy scales the step, then
        rounds to float32) and its state entries for the next round (``state`` holds
        the entries this optimizer returned for the base version). Rows not ``touched``
        (None: all are) must keep their weights and state."""
        ...


@dataclass
class Strategy:
    aggregator: Aggregator
    optimizer: ServerOptimizer

    def add(self, update: Update) -> None:
        self.aggregator.add(update)

    def result(
        self,
        base: Mapping[str, npt.NDArray[np.generic]],
        state: Mapping[str, npt.NDArray[np.generic]],
        *,
        step_scale: float = 1.0,
    ) -> tuple[dict[str, npt.NDArray[np.float32]], ServerState]:
        """The new model tensors (float32) and the server state to store with them.

        ``step_scale`` < 1 shortens the server's step, whatever the optimizer:
        ``base + step_scale * (new - base)`` (the back-off of a diverging federation).
        """
        weights: dict[str, npt.NDArray[np.float32]] = {}
        new_state: ServerState = {}
        for name, delta in self.aggregator.mean_deltas():
            new, entries = self.optimizer.step(
                name, base[name], delta, state, touched=self.aggregator.touched(name)
            )
            if step_scale != 1.0:
                origin = np.asarray(base[name], dtype=np.float64)
                new = origin + step_scale * (new - origin)
            # an overflow becomes inf here; the aggregation job checks and backs off
            with np.errstate(over="ignore"):
                weights[name] = new.astype(np.float32)
            new_state.update(entries)
        return weights, new_state


def build_strategy(
    spec: StrategySpec, tensors: Mapping[str, TensorSpec], *, dp: DPAggregation | None
) -> Strategy:
    """The strategy a federation's ``StrategySpec`` names."""
    if spec.aggregator != "mean":  # pragma: no cover - spec-validated
        raise ValueError(f"unknown aggregator {spec.aggregator!r}")
    return Strategy(
        aggregator=WeightedMean(
            tensors,
            row_normalization=spec.normalization,
            weighting=spec.weighting,
            dp=dp,
            clip_norm=spec.update_norm_clip,
        ),
        optimizer=build_optimizer(spec),
    )
