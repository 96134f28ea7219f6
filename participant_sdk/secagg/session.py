"""One participant's secure-aggregation round over REST, from start to sum.

:func:`contribute` clips the update, encodes it and runs the four phases with
:class:`~participant_sdk.secagg.client.SecAggClient`, polling ``client.secagg.status``
between them. The client state machine checks every message from the coordinator before
answering; when it refuses (an inconsistent unmask request, a roster without our keys),
:class:`~participant_sdk.secagg.client.SecAggRefusal` propagates and nothing is sent for
that phase. A phase that closed without us (we were late) ends our part: the round goes on
without our input, or recovers it from the others' shares if we were already summed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from .._exceptions import ConflictError
from ..types import SecAggStatus
from .client import SecAggClient, SecAggRefusal
from .fixed_point import FixedPointCodec
from .keys import RoundContext
from .messages import Roster, ShareInbox, UnmaskRequest

if TYPE_CHECKING:
    from .._client import Client

__all__ = ["Outcome", "SecAggRefusal", "clip_to_norm", "contribute"]

log = logging.getLogger("fedrec.participant")

# how often the participant asks whether the phase moved on: soon at first (a phase
# closes as soon as everyone answered), then backing off so that a long phase costs the
# coordinator few reads
FIRST_POLL_SECONDS = 0.1
MAX_POLL_SECONDS = 2.0
Result = Literal["summed", "dropped", "aborted", "not-in-cohort", "too-late"]


@dataclass(frozen=True)
class Outcome:
    """How a round's secure aggregation ended for this participant."""

    result: Result  # summed: our input is in the round's sum
    phase: str  # the round's last phase we saw
    abort_reason: str | None = None


def clip_to_norm(vector: npt.NDArray[np.floating], clip_norm: float) -> npt.NDArray[np.float64]:
    """``vector * min(1, C / ||vector||)``: the update's global L2 norm bounded by ``C``."""
    flat = np.asarray(vector, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(flat))
    return flat if norm <= clip_norm else flat * (clip_norm / norm)


def _wait(
    client: Client,
    fid: str,
    number: int,
    leave: str,
    *,
    timeout: float,
    sleep: Callable[[float], None],
) -> SecAggStatus:
    """Poll until the round leaves phase ``leave`` (bounded by ``timeout`` seconds)."""
    give_up = time.monotonic() + timeout
    pause = FIRST_POLL_SECONDS
    while True:
        status = client.secagg.status(fid, number)
        if status.phase != leave:
            return status
        if time.monotonic() > give_up:
            raise TimeoutError(f"round {number} stayed in phase {leave!r} for {timeout:.0f}s")
        sleep(pause)
        pause = min(pause * 1.5, MAX_POLL_SECONDS)


def contribute(
    client: Client,
    fid: str,
    number: int,
    participant: str,
    update: npt.NDArray[np.floating],
    *,
    timeout: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Take part in round ``number``'s secure aggregation with ``update`` (the dense update,
    every tensor flattened in the model spec's order). Returns once the round's protocol
    ended (done or aborted) or went on without us; raises ``SecAggRefusal`` if the
    coordinator asked for something the protocol forbids (nothing was sent then)."""
    status = client.secagg.status(fid, number)
    if not status.in_cohort:
        return Outcome("not-in-cohort", status.phase)
    if status.phase != "advertise":
        return Outcome("too-late", status.phase)
    vector = clip_to_norm(update, status.clip_norm)
    if vector.size != status.vector_length:
        raise ValueError(
            f"the update has {vector.size} values, the round sums {status.vector_length}"
        )
    codec = FixedPointCodec(clip=status.clip_norm, max_participants=status.max_participants)
    machine = SecAggClient(
        context=RoundContext(fid, number), participant=participant, update=vector, codec=codec
    )

    def wait(leave: str) -> SecAggStatus:
        return _wait(client, fid, number, leave, timeout=timeout, sleep=sleep)

    try:
        client.secagg.send(fid, number, "keys", machine.advertise().to_dict())
        status = wait("advertise")
        if status.phase != "share" or status.roster is None:
            return _ended(status)
        shares = machine.share_keys(Roster.from_dict(status.roster))
        client.secagg.send(fid, number, "shares", shares.to_dict())
        status = wait("share")
        if status.phase != "masked" or status.inbox is None:
            return _ended(status)
        masked = machine.masked_input(ShareInbox.from_dict(status.inbox))
        client.secagg.send(fid, number, "masked-input", masked.to_dict())
        status = wait("masked")
        if status.phase != "unmask" or status.unmask_request is None:
            return _ended(status)
        # the state machine refuses a request that would reveal our input: nothing is sent
        answer = machine.unmask(UnmaskRequest.from_dict(status.unmask_request))
        client.secagg.send(fid, number, "unmask", answer.to_dict())
        status = wait("unmask")
    except ConflictError as error:
        # the phase closed before our message arrived: the round went on without it; our
        # input is still summed if we had uploaded it (the others' shares recover it)
        status = client.secagg.status(fid, number)
        if status.phase == "done" and participant in (status.survivors or []):
            return Outcome("summed", status.phase)
        log.warning("round %d: secure aggregation went on without us (%s)", number, error)
        return Outcome("dropped", status.phase)
    if status.phase == "done" and participant in (status.survivors or []):
        return Outcome("summed", status.phase)
    return _ended(status)


def _ended(status: SecAggStatus) -> Outcome:
    if status.phase == "aborted":
        return Outcome("aborted", status.phase, status.abort_reason)
    return Outcome("dropped", status.phase)
