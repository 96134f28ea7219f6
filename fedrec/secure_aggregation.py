"""One secure-aggregation round run in-process on the real pieces (no HTTP).

Every participant is a :class:`participant_sdk.secagg.client.SecAggClient`, the server is a
:class:`coordinator.domain.secagg.SecAggRound`, and every message crosses between them as
JSON (``to_dict`` then ``from_dict``), as it would over REST. Participants can drop at any
point of the protocol. The tests' property checks and ``bench.secagg`` use it; it lives in
the application package so that the benchmark reaches the coordinator's state machine
through it rather than through coordinator internals.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np

from coordinator.domain.secagg import SecAggRound
from participant_sdk.secagg.client import SecAggClient
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.keys import RoundContext
from participant_sdk.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    Roster,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)

__all__ = ["RoundOutcome", "run_round"]

T = TypeVar("T")


@dataclass
class RoundOutcome:
    """What a simulated round gave and what it cost."""

    total: np.ndarray | None  # the decoded float64 sum, or None: aborted
    words: np.ndarray | None  # the exact sum modulo 2^32 of the survivors' encoded inputs
    survivors: tuple[str, ...]
    abort_reason: str | None
    encoded: dict[str, np.ndarray]  # each participant's encoded input (uint32)
    # every body the server received, as sent: no masked input may equal an encoded input
    server_received: list[bytes] = field(default_factory=list)
    client_cpu_seconds: dict[str, float] = field(default_factory=dict)
    client_bytes_sent: dict[str, int] = field(default_factory=dict)
    client_bytes_received: dict[str, int] = field(default_factory=dict)
    server_cpu_seconds: float = 0.0
    # whom each participant shared with (the drawn graph; everyone on the complete graph)
    neighbours: dict[str, frozenset[str]] = field(default_factory=dict)


def _wire(message: Any) -> bytes:
    return json.dumps(message.to_dict(), sort_keys=True, separators=(",", ":")).encode()


def _parse(body: bytes, kind: Callable[[dict[str, Any]], T]) -> T:
    return kind(json.loads(body))


def _receive(
    handler: Callable[[T], None], kind: Callable[[dict[str, Any]], T], body: bytes
) -> None:
    """The server's side of one upload: parse and validate the body, then hand it over."""
    handler(_parse(body, kind))


def run_round(
    updates: Mapping[str, np.ndarray],
    *,
    threshold: int,
    clip: float,
    max_participants: int | None = None,
    context: RoundContext | None = None,
    drop_before_sharing: Collection[str] = (),
    drop_before_upload: Collection[str] = (),
    drop_after_upload: Collection[str] = (),
    graph: str = "complete",
    degree: int | None = None,
    neighbour_threshold: int | None = None,
) -> RoundOutcome:
    """Run the four phases for ``updates`` (participant → float vector, all one length).

    ``drop_before_sharing`` advertise keys and vanish; ``drop_before_upload`` also share
    keys; ``drop_after_upload`` also upload their masked input but never answer the unmask
    request. ``graph``, ``degree`` and ``neighbour_threshold`` are those of
    ``privacy.secure_aggregation`` (``harary``: SecAgg+'s sparse graph, each participant
    receiving only its neighbourhood's roster and unmask request). Times are process CPU:
    a client's covers its calls and encoding and parsing its messages; the server's, the
    state machine and encoding and parsing its messages.
    """
    context = context or RoundContext("federation", 1)
    lengths = {np.asarray(u).size for u in updates.values()}
    if len(lengths) != 1:
        raise ValueError("all updates must have one length")
    codec = FixedPointCodec(clip=clip, max_participants=max_participants or len(updates))
    server = SecAggRound(
        context=context,
        threshold=threshold,
        vector_length=lengths.pop(),
        clip=clip,
        max_participants=codec.max_participants,
        graph=graph,
        degree=degree,
        neighbour_threshold=neighbour_threshold,
    )
    cpu = dict.fromkeys(updates, 0.0)
    sent = dict.fromkeys(updates, 0)
    received = dict.fromkeys(updates, 0)
    outcome = RoundOutcome(None, None, (), None, {}, [], cpu, sent, received)
    server_clock = [0.0]

    def as_client(participant: str, call: Callable[[], Any]) -> bytes:
        start = time.process_time()
        body = _wire(call())
        cpu[participant] += time.process_time() - start
        sent[participant] += len(body)
        outcome.server_received.append(body)
        return body

    def as_server(call: Callable[[], T]) -> T:
        start = time.process_time()
        try:
            return call()
        finally:
            server_clock[0] += time.process_time() - start

    def deliver(participant: str, message: Any, kind: Callable[[dict[str, Any]], T]) -> T:
        """The server encodes an answer (its time), the participant parses it (its time)."""
        body = as_server(partial(_wire, message))
        received[participant] += len(body)
        start = time.process_time()
        parsed = _parse(body, kind)
        cpu[participant] += time.process_time() - start
        return parsed

    clients = {
        p: SecAggClient(context=context, participant=p, update=np.asarray(u), codec=codec)
        for p, u in updates.items()
    }
    outcome.encoded = {p: c.encoded_input for p, c in clients.items()}

    def finish(total: np.ndarray | None) -> RoundOutcome:
        outcome.total = total
        outcome.words = None if server.result is None else server.result_words()
        outcome.survivors = server.survivors if total is not None else ()
        outcome.abort_reason = server.abort_reason
        outcome.server_cpu_seconds = server_clock[0]
        return outcome

    alive = set(clients)
    for p in sorted(alive):
        body = as_client(p, clients[p].advertise)
        as_server(partial(_receive, server.receive_keys, AdvertiseKeys.from_dict, body))
    if as_server(server.close_advertising) is None:
        return finish(None)
    outcome.neighbours = {p: server.neighbours(p) for p in clients}

    alive -= set(drop_before_sharing)
    for p in sorted(alive):
        # each participant's roster: everyone, or its neighbourhood on a sparse graph
        view = deliver(p, as_server(partial(server.roster, p)), Roster.from_dict)
        body = as_client(p, partial(clients[p].share_keys, view))
        as_server(partial(_receive, server.receive_shares, ShareKeys.from_dict, body))
    inboxes = as_server(server.close_sharing)
    if inboxes is None:
        return finish(None)

    alive -= set(drop_before_upload)
    for p in sorted(alive):
        inbox = deliver(p, inboxes[p], ShareInbox.from_dict)
        body = as_client(p, partial(clients[p].masked_input, inbox))
        as_server(partial(_receive, server.receive_masked_input, MaskedInput.from_dict, body))
    if as_server(server.close_masked) is None:
        return finish(None)

    alive -= set(drop_after_upload)
    for p in sorted(alive):
        request = as_server(partial(server.unmask_request, p))
        view_request = deliver(p, request, UnmaskRequest.from_dict)
        body = as_client(p, partial(clients[p].unmask, view_request))
        as_server(partial(_receive, server.receive_unmask, UnmaskResponse.from_dict, body))
    return finish(as_server(server.finish))
