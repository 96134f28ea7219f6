"""Early stopping on a validation metric, with the coordinator's stop-policy semantics.

The same functions decide (:mod:`coordinator.domain.validation_curve`): the curve is
smoothed over ``window`` steps centred on each; a step improves only when its smoothed
value beats the best so far by more than ``min_delta``; training stops once ``patience``
steps in a row did not, and not before step ``min_rounds``. The best step (the highest
smoothed value, later steps winning ties, as the deploy policy picks versions) is the one
kept. With a window above 1 the best can be a step already past:
:meth:`EarlyStopping.keep` names the steps whose models the caller must still hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.domain.validation_curve import best_version, plateaus, smoothed, stale_versions

# re-exported for bench/, which reaches the coordinator only through fedrec
__all__ = ["EarlyStopping", "best_version", "plateaus", "smoothed", "stale_versions"]


@dataclass
class EarlyStopping:
    patience: int | None
    min_delta: float = 0.0
    window: int = 1
    # patience is not consulted before this step (the round policy's min_rounds)
    min_rounds: int | None = None
    values: dict[int, float] = field(default_factory=dict)

    def update(self, step: int, value: float) -> bool:
        """Record ``value`` at ``step``; True if ``step`` is now the best (keep its model)."""
        self.values[step] = value
        return self.best_step == step

    @property
    def best_step(self) -> int | None:
        found = best_version(smoothed(self.values, self.window))
        return None if found is None else found[0]

    @property
    def best_value(self) -> float:
        """The best step's own value (not its window's mean), as the deployment records."""
        best = self.best_step
        return float("-inf") if best is None else self.values[best]

    def keep(self) -> set[int]:
        """The steps whose models may still be deployed: the latest ``window // 2``,
        whose smoothed values later steps still change, and the best of the others,
        whose values are final (it can be the best again once the latest settle)."""
        half = self.window // 2
        steps = sorted(self.values)
        latest = set(steps[len(steps) - half :]) if half else set()
        curve = smoothed(self.values, self.window)
        final = best_version({step: curve[step] for step in steps if step not in latest})
        return latest | ({final[0]} if final is not None else set())

    @property
    def should_stop(self) -> bool:
        if self.patience is None or max(self.values, default=0) < (self.min_rounds or 0):
            return False
        return stale_versions(smoothed(self.values, self.window), self.min_delta) >= self.patience
