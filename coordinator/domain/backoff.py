"""Back-off: a federation that diverges steps more carefully instead of dying.

Two signs of divergence, both checked by the aggregation job:

* **non-finite weights** — the server step overflowed float32 (a huge ``server_lr`` or
  delta): the step is halved until the new weights are finite, down to
  ``MIN_STEP_SCALE``, below which the base weights are kept unchanged;
* **validation collapse** — the round's base version scores below ``COLLAPSE_RATIO`` of
  the best version validated so far (aggregated over participants, on the deploy
  metric): the new version restores the best version's weights, and the step is halved.

The step scale is recorded on every version (``step_scale``) and inherited by the next
round, so the back-off is durable, deterministic and the same on every replica. A
restored version still has the previous version as its parent (``restored_from`` says
whose weights it carries), so the lineage stays one chain.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

__all__ = ["COLLAPSE_RATIO", "MIN_STEP_SCALE", "all_finite", "restore_target"]

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


def all_finite(tensors: Mapping[str, npt.NDArray[np.generic]]) -> bool:
    return all(bool(np.isfinite(array).all()) for array in tensors.values())
