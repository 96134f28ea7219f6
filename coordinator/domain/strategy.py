"""The strategy interface: an aggregator and a server optimizer, chosen separately.

A round's aggregation streams the round's updates through the *aggregator*, which
yields one delta per tensor, then the *server optimizer* turns base + delta into the
new model. A server optimizer may keep durable state between rounds (FedAvgM's
momentum, FedAdam's moments): it receives the state stored with the base version and
returns the state to store with the new one (as a safetensors blob, see
``ModelVersion.server_state_sha256``), so a restarted or replaced coordinator resumes it.

Today: aggregators ``mean`` (:class:`~coordinator.domain.aggregation.WeightedMean`),
``median``, ``trimmed_mean`` and ``multi_krum`` (robust to poisoning,
:mod:`coordinator.domain.robust_aggregation`), and
server optimizers ``fedavg`` (:class:`~coordinator.domain.aggregation.FedAvgStep`,
stateless), ``fedavgm``, ``fedadam`` and ``fedyogi``
(:mod:`coordinator.domain.server_optimizers`, per-row moments). The aggregator also
says which rows the round touched, so an optimizer leaves the others, and their state,
alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from coordinator.domain.aggregation import WeightedMean
from coordinator.domain.errors import ValidationFailed
from coordinator.domain.privacy import DPAggregation
from coordinator.domain.robust_aggregation import CoordinateWise, MultiKrum
from coordinator.domain.server_optimizers import build_optimizer
from coordinator.domain.specs import ModelSpec, PrivacyPolicy, StrategySpec
from participant_sdk.wire import TensorSpec, Update

__all__ = [
    "Aggregator",
    "ServerOptimizer",
    "ServerState",
    "Strategy",
    "build_strategy",
    "check_aggregator",
]

ServerState = dict[str, npt.NDArray[np.float32]]


class Aggregator(Protocol):
    """Folds a round's updates, one at a time, into one delta per tensor."""

    count: int

    def add(self, update: Update) -> None: ...

    def mean_deltas(self) -> Iterator[tuple[str, npt.NDArray[np.float64]]]:
        """Each tensor's aggregated delta, as fresh arrays the caller owns (a server
        optimizer may write over them); computed again on every call."""
        ...

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
        (None: all are) must keep their weights and state. ``delta`` is the caller's to
        give away: the step may write its result over it."""
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
    aggregator: Aggregator
    if spec.aggregator == "mean":
        aggregator = WeightedMean(
            tensors,
            row_normalization=spec.normalization,
            weighting=spec.weighting,
            dp=dp,
            clip_norm=spec.update_norm_clip,
        )
    elif dp is not None:  # pragma: no cover - refused by check_aggregator
        raise ValueError("privacy.dp needs the mean aggregator")
    elif spec.aggregator == "multi_krum":
        aggregator = MultiKrum(
            tensors,
            byzantine_fraction=spec.krum_byzantine_fraction,
            clip_norm=spec.update_norm_clip,
            row_normalization=spec.normalization,
            weighting=spec.weighting,
        )
    else:
        aggregator = CoordinateWise(
            tensors,
            statistic=spec.aggregator,
            trim_fraction=spec.trim_fraction if spec.aggregator == "trimmed_mean" else 0.0,
            min_contributors=spec.min_contributors,
            clip_norm=spec.update_norm_clip,
            row_normalization=spec.normalization,
            weighting=spec.weighting,
        )
    return Strategy(aggregator=aggregator, optimizer=build_optimizer(spec))


def check_aggregator(model: ModelSpec, strategy: StrategySpec, privacy: PrivacyPolicy) -> None:
    """Refuse a robust aggregator where the individual updates are not available or not
    aggregated: under DP (its noise is calibrated to the clipped mean's sensitivity) and for
    ``ease`` (its Grams are summed exactly). Secure aggregation, which reveals only the sum,
    belongs here too: see ``StrategySpec.needs_individual_updates``."""
    if not strategy.needs_individual_updates:
        return
    if privacy.dp is not None:
        raise ValidationFailed(
            f"strategy.aggregator {strategy.aggregator!r} cannot run under privacy.dp: the "
            "noise is calibrated to the clipped mean; use aggregator 'mean' (its clipping "
            "bounds each participant) or leave privacy.dp out",
            field="strategy.aggregator",
        )
    if model.kind == "ease":
        raise ValidationFailed(
            f"strategy.aggregator {strategy.aggregator!r} does not apply to model kind "
            "'ease', whose participants' Grams are summed exactly; use 'mean'",
            field="strategy.aggregator",
        )
