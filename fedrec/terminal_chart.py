"""Metric curves drawn in a terminal: one line of block characters per metric.

``fedrec status`` shows how validation NDCG/HR/Precision/Recall moved version by
version; a sparkline is enough to see a climb, a plateau or a collapse, and it needs
no plotting library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["marker_line", "sparkline"]

BLOCKS = "▁▂▃▄▅▆▇█"
GAP = " "  # a version nobody evaluated


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value, scaled between the smallest and largest (``None``: gap).

    A flat series draws mid-height blocks, so "no change" does not look like "zero".
    """
    known = [v for v in values if v is not None and math.isfinite(v)]
    if not known:
        return GAP * len(values)
    low, high = min(known), max(known)
    out = []
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(GAP)
        elif high == low:
            out.append(BLOCKS[len(BLOCKS) // 2])
        else:
            level = round((value - low) / (high - low) * (len(BLOCKS) - 1))
            out.append(BLOCKS[level])
    return "".join(out)


def marker_line(index: int | None, width: int, mark: str = "▲") -> str:
    """A line of ``width`` spaces with ``mark`` under position ``index`` (none if None)."""
    if index is None or not 0 <= index < width:
        return ""
    return " " * index + mark
