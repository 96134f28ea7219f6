"""What a running participant tells its operator: a log line per round, with an ETA.

:meth:`FederatedRecommender.run` reports through :class:`RoundProgress`: one INFO line
per round it uploaded (``round 3/100 uploaded: 812 examples, loss 0.4120; ETA ~4m``),
one when the coordinator is reachable again after an outage, and optionally a progress
bar drawn with ``rich`` (the ``app`` extra; imported only when asked for). The round cap
is an upper bound (training may stop early on validation), so the ETA is "at most".
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["RoundProgress", "format_seconds"]

log = logging.getLogger("fedrec.participant")


def format_seconds(seconds: float) -> str:
    """``75`` -> ``"1m15s"``; coarse on purpose: an ETA is an estimate."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class RoundProgress:
    """Round-by-round progress of one participant: log lines and an optional bar.

    Parameters
    ----------
    federation_id:
        Named in the log lines.
    max_rounds:
        The federation's round cap (``None`` when it has none): the ETA's horizon.
    bar:
        Draw a ``rich`` progress bar as well (needs ``pip install rich``).
    """

    def __init__(self, federation_id: str, max_rounds: int | None, *, bar: bool = False) -> None:
        self.federation_id = federation_id
        self.max_rounds = max_rounds
        self._started = time.monotonic()
        self._first_round: int | None = None
        self._bar: Any = None
        self._task: Any = None
        if bar:
            try:
                from rich.progress import Progress
            except ImportError as exc:
                raise ImportError(
                    "run(progress_bar=True) draws with rich: pip install rich "
                    "(or the fedrec[app] extra)"
                ) from exc
            self._bar = Progress(transient=False)
            self._bar.start()
            self._task = self._bar.add_task(f"federation {federation_id}", total=max_rounds)

    def eta_seconds(self, round_number: int) -> float | None:
        """Seconds left at the mean pace so far, if the federation has a round cap."""
        if self.max_rounds is None:
            return None
        if self._first_round is None:
            self._first_round = round_number
            self._started = time.monotonic()
            return None
        done = round_number - self._first_round
        if done <= 0:
            return None
        per_round = (time.monotonic() - self._started) / done
        return per_round * max(self.max_rounds - round_number, 0)

    def uploaded(self, round_number: int, num_examples: int, loss: float | None) -> None:
        """Log the round just uploaded, with the ETA to the round cap."""
        eta = self.eta_seconds(round_number)
        total = f"/{self.max_rounds}" if self.max_rounds is not None else ""
        loss_text = f", loss {loss:.4f}" if loss is not None else ""
        eta_text = f"; ETA at most ~{format_seconds(eta)}" if eta is not None else ""
        log.info(
            "federation %s: round %d%s uploaded (%d examples%s)%s",
            self.federation_id,
            round_number,
            total,
            num_examples,
            loss_text,
            eta_text,
        )
        if self._bar is not None:
            self._bar.update(self._task, completed=round_number)

    def reconnected(self, outage_seconds: float) -> None:
        log.info(
            "reconnected to the coordinator after %s; resuming at its current round",
            format_seconds(outage_seconds),
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
