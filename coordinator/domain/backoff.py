"""Back-off: a federation that diverges steps more carefully instead of dying.

Two signs of divergence, both checked by the aggregation job:

* **non-finite weights** — the server step overflowed float32 (a huge ``server_lr`` or
  delta): the step is halved until the new weights are finite, down to
  ``MIN_STEP_SCALE``, below which the base weights are kept unchanged;
* **validation collapse** — the round's base version scores below ``COLLAPSE_RATIO`` of
  the best version validated so far (aggregated over participants, on the deploy
  metric): the new version restores the best version's weights, and the step is halved.

A third, gentler cause is no divergence: **reduce-on-plateau** (the strategy's
``plateau_decay``) multiplies the step by a factor each time the validation curve
stalls (:func:`plateau_scale`), so a noisy federation settles instead of jumping.

The step scale is recorded on every version (``step_scale``) and inherited by the next
round, so the back-off is durable, deterministic and the same on every replica. A
restored version still has the previous version as its parent (``restored_from`` says
whose weights it carries), so the lineage stays one chain.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from coordinator.domain.validation_curve import plateaus

__all__ = ["COLLAPSE_RATIO", "MIN_STEP_SCALE", "all_finite", "plateau_scale", "restore_target"]

# A version below half the best validated one has collapsed (noise between evaluations
# of a healthy federation is far smaller; a diverged one falls to popularity level or below).
COLLAPSE_RATIO = 0.5
MIN_STEP_SCALE = 1.0 / 1024


def restore_target(
    scores: Mapping[int, float], base_version: int, *, ratio: float = COLLAPSE_RATIO
) -> int | None:
    """The best validated version to restore if ``base_version`` collapsed, else None."""
    if base_version not in scores:
        return None
    best_version, best = max(scores.items(), key=lambda item: (item[1], item[0]))
    if best_version == base_version or best <= 0:
        return None
    return best_version if scores[base_version] < ratio * best else None


def plateau_scale(
    inherited: float,
    curve: Mapping[int, float],
    *,
    factor: float,
    patience: int,
    min_delta: float,
) -> float:
    """The step scale of the next round under reduce-on-plateau: ``factor`` to the power
    of the plateaus the (smoothed) validation ``curve`` has had so far, never above the
    ``inherited`` scale (a back-off's halving stays) nor below :data:`MIN_STEP_SCALE`.

    A function of the stored scores and the base version's stored scale only, so a
    restarted coordinator and every replica derive the same step.
    """
    decayed = factor ** plateaus(curve, patience, min_delta)
    return max(MIN_STEP_SCALE, min(inherited, decayed))


def all_finite(tensors: Mapping[str, npt.NDArray[np.generic]]) -> bool:
    return all(bool(np.isfinite(array).all()) for array in tensors.values())
