"""What an upload needs to know of an open round, kept per process once one upload read it.

Every upload read its federation's and round's columns on a read session of its own before
its write transaction (``RoundRepository.upload_check``): ~0.4-0.5 ms of CPU per upload,
943 times in a per-user round of ML-100K, to learn what the round's first upload learnt. A
round's id and base version never change once it opened (its number is unique in its
federation), so after one upload found the round open and unsampled, the process keeps
them here and the next uploads skip that read: their write transaction's guarded count
re-checks that the round is still open and says whether the participant already has an
update in it or sent the same ``Idempotency-Key`` before
(``RoundRepository.count_update_unless_repeat``). Anything but a first upload to a round
still open (a retry, a refusal, a closed round) is answered by the full path, as before.

Nothing here decides what is accepted: a stale entry (the round closed, the federation
went away) costs one write transaction that counts nothing, then the full path; each
process fills its own, and the facts are the same in every process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["OpenRoundFacts", "OpenRounds"]

MAX_ROUNDS = 1_024


@dataclass(frozen=True)
class OpenRoundFacts:
    """An unsampled round found open: its row and the version its updates are deltas of."""

    round_id: str
    base_version: int


class OpenRounds:
    """Per process: :class:`OpenRoundFacts` by (federation, round number), the most recent
    ``max_rounds`` kept."""

    def __init__(self, max_rounds: int = MAX_ROUNDS) -> None:
        self.max_rounds = max_rounds
        self._lock = threading.Lock()
        self._facts: OrderedDict[tuple[str, int], OpenRoundFacts] = OrderedDict()

    def get(self, federation_id: str, number: int) -> OpenRoundFacts | None:
        return self._facts.get((federation_id, number))

    def put(self, federation_id: str, number: int, facts: OpenRoundFacts) -> None:
        with self._lock:
            self._facts[(federation_id, number)] = facts
            self._facts.move_to_end((federation_id, number))
            while len(self._facts) > self.max_rounds:
                self._facts.popitem(last=False)

    def forget(self, federation_id: str, number: int) -> None:
        """Drop a round found no longer open."""
        with self._lock:
            self._facts.pop((federation_id, number), None)
