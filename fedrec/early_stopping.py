"""Early stopping on a validation metric, with the coordinator's stop-policy semantics.

A step improves only when it beats the best so far by more than ``min_delta``; training
stops once ``patience`` steps in a row did not. The best step (the highest value, later
steps winning ties, as the deploy policy picks versions) is the one kept.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EarlyStopping"]


@dataclass
class EarlyStopping:
    patience: int | None
    min_delta: float = 0.0
    best_step: int | None = None
    best_value: float = float("-inf")
    _reference: float = float("-inf")  # the last value that counted as an improvement
    _stale: int = 0

    def update(self, step: int, value: float) -> bool:
        """Record ``value`` at ``step``; True if it is the best so far (keep this model)."""
        if self.best_step is None or value > self._reference + self.min_delta:
            self._reference, self._stale = value, 0
        else:
            self._stale += 1
        best = self.best_step is None or value >= self.best_value
        if best:
            self.best_step, self.best_value = step, value
        return best

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self._stale >= self.patience
