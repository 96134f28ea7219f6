"""The coordinator's side of secure aggregation: a pure state machine, one per round.

Phases (Bonawitz et al. 2017; the messages are ``participant_sdk.secagg.messages``)::

    advertise ──close_advertising──▶ share ──close_sharing──▶ masked
        ──close_masked──▶ unmask ──finish──▶ done
    any close with fewer than ``threshold`` participants ──▶ aborted

``SecAggRound`` holds no key, no database session and no clock: the caller
(``coordinator.domain.secure_rounds``, the REST phases) decides when a phase closes (a
deadline, or everyone answered) and stores ``to_dict()`` after every change, so a
restarted coordinator resumes with ``from_dict``. Each ``receive_*`` validates the message
completely before it changes anything, and accepts an identical repeat (a retry) without
change.

What the server learns: public keys, ciphertexts it cannot open, masked inputs (uniform
without the masks) and, at the end, the self-mask seeds of the survivors and the mask keys
of the dropped, which remove exactly the masks covering the survivors' **sum**. It never
holds both for one participant: the clients refuse an unmask request that would give that.
The outcome is the exact sum modulo 2^32 of the survivors' encoded inputs, or an abort
(fewer than ``threshold`` at any phase, or reconstructed material that fails its check); an
abort deletes every masked input and share.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from coordinator.domain.errors import Conflict, CoordinatorError
from participant_sdk.secagg import shamir
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.keys import (
    RoundContext,
    mask_seed,
    mask_sign,
    public_key_of,
    self_mask_commitment,
)
from participant_sdk.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    MessageError,
    Roster,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    b64,
    unb64,
)
from participant_sdk.secagg.prg import mask_words

__all__ = [
    "GRAPHS",
    "InvalidSecAggMessage",
    "Phase",
    "SecAggPhaseConflict",
    "SecAggRound",
    "connected_parts",
    "default_degree",
    "harary_neighbours",
]

# a share message: 12-byte nonce, two shares, 16-byte tag
_CIPHERTEXT_BYTES = 12 + 2 * shamir.SHARE_BYTES + 16
MIN_THRESHOLD = 2


GRAPHS = ("complete", "harary")


def default_degree(participants: int) -> int:
    """SecAgg+'s k = O(log n): 2*ceil(log2 n), even (k/2 neighbours on each side)."""
    return 2 * max(1, math.ceil(math.log2(max(participants, 2))))


def harary_neighbours(ring: Sequence[str], degree: int) -> dict[str, frozenset[str]]:
    """The Harary graph H(k, n) over ``ring``: each member is joined to the k/2 nearest on
    each side (all others once k >= n - 1). k-connected: k - 1 removals leave it whole."""
    n = len(ring)
    if degree >= n - 1:
        everyone = frozenset(ring)
        return {p: everyone - {p} for p in ring}
    half = degree // 2
    return {
        p: frozenset(ring[(i + step) % n] for step in range(-half, half + 1) if step)
        for i, p in enumerate(ring)
    }


def connected_parts(members: set[str], neighbours: Callable[[str], frozenset[str]]) -> int:
    """How many connected parts the graph induced on ``members`` has."""
    unseen, parts = set(members), 0
    while unseen:
        parts += 1
        stack = [unseen.pop()]
        while stack:
            for peer in neighbours(stack.pop()) & unseen:
                unseen.discard(peer)
                stack.append(peer)
    return parts


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("participant lists must be lists of ids")
    return tuple(value)


class InvalidSecAggMessage(CoordinatorError):
    status_code = 422
    slug = "invalid-secagg-message"
    title = "Invalid secure-aggregation message"


class SecAggPhaseConflict(Conflict):
    slug = "secagg-wrong-phase"
    title = "Secure-aggregation message for another phase"


class Phase(StrEnum):
    ADVERTISE = "advertise"
    SHARE = "share"
    MASKED = "masked"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


@dataclass
class SecAggRound:
    """One round's secure aggregation, as plain data (see ``to_dict``)."""

    context: RoundContext
    threshold: int
    vector_length: int
    clip: float
    max_participants: int
    # whom a participant shares with: every other one, or its neighbours on a Harary graph
    # (SecAgg+) drawn when the advertisement closes: ``ring`` (the drawn order), ``degree``
    # and ``neighbour_threshold`` as drawn (the requested ones until then, None = default)
    graph: str = "complete"
    degree: int | None = None
    neighbour_threshold: int | None = None
    ring: tuple[str, ...] = ()
    phase: Phase = Phase.ADVERTISE
    advertised: dict[str, AdvertiseKeys] = field(default_factory=dict)
    shares: dict[str, ShareKeys] = field(default_factory=dict)
    masked: dict[str, bytes] = field(default_factory=dict)
    survivors: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    unmasked: dict[str, UnmaskResponse] = field(default_factory=dict)
    result: bytes | None = None
    abort_reason: str | None = None

    def __post_init__(self) -> None:
        if self.threshold < MIN_THRESHOLD:
            raise ValueError(f"threshold must be at least {MIN_THRESHOLD}")
        if self.vector_length < 1:
            raise ValueError("vector_length must be positive")
        if self.graph not in GRAPHS:
            raise ValueError(f"graph must be one of {GRAPHS}")
        if self.graph == "complete" and (self.degree, self.neighbour_threshold) != (None, None):
            raise ValueError("degree and neighbour_threshold apply to the harary graph only")
        FixedPointCodec(clip=self.clip, max_participants=self.max_participants)  # validates
        self._neighbours: dict[str, frozenset[str]] | None = None

    # the graph ----------------------------------------------------------------------------------
    @property
    def share_threshold(self) -> int:
        """The Shamir threshold: the round's, or the neighbourhood's on a sparse graph."""
        if self.graph == "complete":
            return self.threshold
        assert self.neighbour_threshold is not None  # drawn with the ring
        return self.neighbour_threshold

    def neighbours(self, participant: str) -> frozenset[str]:
        """Whom ``participant`` shares keys and pair masks with (itself excluded)."""
        if self.graph == "complete":
            return frozenset(self.advertised.keys() - {participant})
        if self._neighbours is None:  # the ring is fixed once drawn
            self._neighbours = harary_neighbours(self.ring, self._drawn_degree())
        return self._neighbours.get(participant, frozenset())

    def _closed(self, participant: str) -> frozenset[str]:
        return self.neighbours(participant) | {participant}

    def _drawn_degree(self) -> int:
        assert self.degree is not None  # drawn with the ring
        return self.degree

    def _draw_graph(self) -> bool:
        """Draw the round's Harary graph over the advertised participants (a uniformly
        random ring order from the OS CSPRNG); False when the round aborted."""
        self._neighbours = None
        if self.graph == "complete":
            return True
        order = sorted(self.advertised)
        secrets.SystemRandom().shuffle(order)
        n = len(order)
        degree = min(self.degree or default_degree(n), n - 1)
        threshold = self.neighbour_threshold or (degree + 1) // 2 + 1
        if threshold > degree + 1:
            self._abort(
                f"the neighbourhood threshold {threshold} exceeds the {degree + 1} members of a "
                f"neighbourhood ({n} participants advertised keys)"
            )
            return False
        self.ring, self.degree, self.neighbour_threshold = tuple(order), degree, threshold
        return True

    @property
    def codec(self) -> FixedPointCodec:
        return FixedPointCodec(clip=self.clip, max_participants=self.max_participants)

    # checks shared by every receive ---------------------------------------------------------
    def _expect(self, phase: Phase, context: RoundContext) -> None:
        if context != self.context:
            raise InvalidSecAggMessage(
                f"the message belongs to federation {context.federation_id!r} round "
                f"{context.round_number}, this is {self.context.federation_id!r} round "
                f"{self.context.round_number}",
            )
        if self.phase != phase:
            raise SecAggPhaseConflict(
                f"this round is in phase {self.phase.value!r}, not {phase.value!r}",
                phase=self.phase.value,
            )

    def _abort(self, reason: str) -> None:
        """Sum-or-abort: nothing is published and the masked material is deleted."""
        self.phase = Phase.ABORTED
        self.abort_reason = reason
        self.shares.clear()
        self.masked.clear()
        self.unmasked.clear()
        self.result = None

    def abort(self, reason: str) -> None:
        """Abort from outside (the round's quorum, which the caller enforces)."""
        if self.phase in (Phase.DONE, Phase.ABORTED):
            raise SecAggPhaseConflict(f"the round already ended ({self.phase.value})")
        self._abort(reason)

    def _enough(self, count: int, what: str) -> bool:
        if count < self.threshold:
            self._abort(f"{count} participants {what}, fewer than the threshold {self.threshold}")
            return False
        return True

    # phase 1 ---------------------------------------------------------------------------------
    def receive_keys(self, message: AdvertiseKeys) -> None:
        """Record a participant's advertised keys."""
        self._expect(Phase.ADVERTISE, message.context)
        earlier = self.advertised.get(message.participant)
        if earlier is not None:
            if earlier != message:
                raise SecAggPhaseConflict("this participant already advertised other keys")
            return
        if len(self.advertised) >= self.max_participants:
            raise SecAggPhaseConflict(f"the round is full ({self.max_participants} participants)")
        taken = {k for e in self.advertised.values() for k in (e.encryption_key, e.mask_key)}
        if {message.encryption_key, message.mask_key} & taken or (
            message.encryption_key == message.mask_key
        ):
            raise InvalidSecAggMessage("public keys must be fresh: one is already in use")
        self.advertised[message.participant] = message

    def close_advertising(self) -> Roster | None:
        """End phase 1: the roster for everyone, or ``None`` when the round aborted."""
        self._expect(Phase.ADVERTISE, self.context)
        if not self._enough(len(self.advertised), "advertised keys"):
            return None
        if not self._draw_graph():
            return None
        self.phase = Phase.SHARE
        return self.roster()

    def roster(self, participant: str | None = None) -> Roster:
        """The whole roster, or on a sparse graph ``participant``'s neighbourhood (itself and
        its neighbours, each with its Shamir point: its position in the whole roster)."""
        everyone = sorted(self.advertised)
        if participant is None or self.graph == "complete":
            return Roster(
                context=self.context,
                threshold=self.share_threshold,
                vector_length=self.vector_length,
                entries=tuple(self.advertised[p] for p in everyone),
            )
        position = {p: index + 1 for index, p in enumerate(everyone)}
        members = sorted(self._closed(participant))
        return Roster(
            context=self.context,
            threshold=self.share_threshold,
            vector_length=self.vector_length,
            entries=tuple(self.advertised[p] for p in members),
            points={p: position[p] for p in members},
            size=len(everyone),
        )

    # phase 2 ---------------------------------------------------------------------------------
    def receive_shares(self, message: ShareKeys) -> None:
        """Record a participant's encrypted shares: one per other roster member, none else."""
        self._expect(Phase.SHARE, message.context)
        sender = message.participant
        if sender not in self.advertised:
            raise InvalidSecAggMessage(f"{sender!r} did not advertise keys in this round")
        expected = set(self.neighbours(sender))
        if set(message.ciphertexts) != expected:
            raise InvalidSecAggMessage(
                "shares must be addressed to every other participant of the sender's roster "
                "exactly once",
                missing=sorted(expected - set(message.ciphertexts)),
                unknown=sorted(set(message.ciphertexts) - expected),
            )
        if any(len(c) != _CIPHERTEXT_BYTES for c in message.ciphertexts.values()):
            raise InvalidSecAggMessage(f"each share ciphertext is {_CIPHERTEXT_BYTES} bytes")
        earlier = self.shares.get(sender)
        if earlier is not None:
            if dict(earlier.ciphertexts) != dict(message.ciphertexts):
                raise SecAggPhaseConflict("this participant already sent other shares")
            return
        self.shares[sender] = message

    def close_sharing(self) -> dict[str, ShareInbox] | None:
        """End phase 2: each sharer's inbox (ciphertexts from the other sharers), or abort."""
        if not self.end_sharing():
            return None
        return {recipient: self.inbox(recipient) for recipient in sorted(self.shares)}

    def end_sharing(self) -> bool:
        """End phase 2 without building the inboxes (a store that keeps the ciphertexts
        elsewhere serves each on request); False when the round aborted."""
        self._expect(Phase.SHARE, self.context)
        if not self._enough(len(self.shares), "shared keys"):
            return False
        if self.graph != "complete":
            # a sharer with too few sharing neighbours would refuse to mask (its client
            # checks the same): nobody could rebuild its secrets
            for sharer in sorted(self.shares):
                count = len(self._closed(sharer) & self.shares.keys())
                if count < self.share_threshold:
                    self._abort(
                        f"{sharer!r} and its neighbours: {count} shared keys, fewer than the "
                        f"neighbourhood threshold {self.share_threshold}"
                    )
                    return False
        self.phase = Phase.MASKED
        return True

    def inbox(self, recipient: str) -> ShareInbox:
        """The ciphertexts addressed to ``recipient`` by the other participants that shared."""
        if recipient not in self.shares:
            raise InvalidSecAggMessage(f"{recipient!r} did not share keys in this round")
        return ShareInbox(
            context=self.context,
            recipient=recipient,
            ciphertexts={
                sender: message.ciphertexts[recipient]
                for sender, message in sorted(self.shares.items())
                if recipient in message.ciphertexts
            },
        )

    # phase 3 ---------------------------------------------------------------------------------
    def receive_masked_input(self, message: MaskedInput) -> None:
        """Record a masked input from a participant that shared keys."""
        self._expect(Phase.MASKED, message.context)
        if message.participant not in self.shares:
            raise InvalidSecAggMessage(f"{message.participant!r} did not share keys")
        if len(message.words) != 4 * self.vector_length:
            raise InvalidSecAggMessage(
                f"a masked input is {self.vector_length} uint32 words ({4 * self.vector_length} "
                f"bytes), got {len(message.words)} bytes"
            )
        earlier = self.masked.get(message.participant)
        if earlier is not None and earlier != message.words:
            raise SecAggPhaseConflict("this participant already sent another masked input")
        self.masked[message.participant] = message.words

    def close_masked(self) -> UnmaskRequest | None:
        """End phase 3: who is alive (uploaded) and who dropped, or abort."""
        self._expect(Phase.MASKED, self.context)
        if not self._enough(len(self.masked), "uploaded a masked input"):
            return None
        self.survivors = tuple(sorted(self.masked))
        self.dropped = tuple(sorted(set(self.shares) - set(self.masked)))
        if self.graph != "complete":
            problem = self._unrecoverable()
            if problem is not None:
                self._abort(problem)
                return None
        self.phase = Phase.UNMASK
        return self.unmask_request()

    def _unrecoverable(self) -> str | None:
        """Why unmasking on the sparse graph would fail or reveal more than the sum: a
        survivor or a dropped participant whose surviving neighbourhood is below the
        threshold, or survivors split in parts (each part's sum would show)."""
        survivors = set(self.survivors)
        t = self.share_threshold
        for survivor in self.survivors:
            count = len(self._closed(survivor) & survivors)
            if count < t:
                return (
                    f"{survivor!r}: {count} of its neighbourhood uploaded, fewer than the "
                    f"neighbourhood threshold {t} (its self mask could not be removed)"
                )
        for gone in self.dropped:
            count = len(self.neighbours(gone) & survivors)
            if 0 < count < t:
                return (
                    f"{gone!r} dropped and only {count} of its neighbours uploaded, fewer than "
                    f"the neighbourhood threshold {t} (its pair masks could not be removed)"
                )
        parts = connected_parts(survivors, self.neighbours)
        if parts > 1:
            return (
                f"the survivors' graph splits into {parts} parts: unmasking would reveal each "
                "part's sum"
            )
        return None

    def unmask_request(self, participant: str | None = None) -> UnmaskRequest:
        """Who uploaded and who dropped; on a sparse graph, within ``participant``'s
        neighbourhood (the only shares it holds)."""
        if participant is None or self.graph == "complete":
            return UnmaskRequest(
                context=self.context, survivors=self.survivors, dropped=self.dropped
            )
        closed = self._closed(participant)
        return UnmaskRequest(
            context=self.context,
            survivors=tuple(p for p in self.survivors if p in closed),
            dropped=tuple(p for p in self.dropped if p in closed),
        )

    # phase 4 ---------------------------------------------------------------------------------
    def receive_unmask(self, message: UnmaskResponse) -> None:
        """Record a survivor's shares: one per survivor (seed) and per dropped one (mask key)."""
        self._expect(Phase.UNMASK, message.context)
        if message.participant not in self.survivors:
            raise InvalidSecAggMessage(f"{message.participant!r} is not a survivor of this round")
        request = self.unmask_request(message.participant)
        if set(message.self_mask_shares) != set(request.survivors) or set(
            message.mask_key_shares
        ) != set(request.dropped):
            raise InvalidSecAggMessage(
                "an unmask response carries a seed share for every survivor and a key share "
                "for every dropped participant of the request, nothing else",
                survivors=list(request.survivors),
                dropped=list(request.dropped),
            )
        shares = [*message.self_mask_shares.values(), *message.mask_key_shares.values()]
        if any(len(s) != shamir.SHARE_BYTES for s in shares):
            raise InvalidSecAggMessage(f"each share is {shamir.SHARE_BYTES} bytes")
        earlier = self.unmasked.get(message.participant)
        if earlier is not None and earlier != message:
            raise SecAggPhaseConflict("this participant already sent other shares")
        self.unmasked[message.participant] = message

    def finish(self) -> np.ndarray | None:
        """End phase 4: the float64 sum of the survivors' inputs, or ``None`` (aborted)."""
        self._expect(Phase.UNMASK, self.context)
        if not self._enough(len(self.unmasked), "answered the unmask request"):
            return None
        try:
            total = self._unmask()
        except (shamir.InconsistentShares, ValueError) as error:
            self._abort(f"reconstruction failed: {error}")
            return None
        self.result = total.astype("<u4").tobytes()
        self.phase = Phase.DONE
        # the masked inputs and shares have served their purpose: only the sum is kept
        self.shares.clear()
        self.masked.clear()
        self.unmasked.clear()
        return self.codec.decode_sum(total, len(self.survivors))

    def result_words(self) -> np.ndarray:
        """The exact sum modulo 2^32 of the survivors' encoded inputs (phase ``done``)."""
        if self.result is None:
            raise SecAggPhaseConflict("the round has no result", phase=self.phase.value)
        return np.frombuffer(self.result, dtype="<u4").astype(np.uint32)

    def _unmask(self) -> np.ndarray:
        roster = self.roster()
        points = {p: roster.share_point(p) for p in self.advertised}
        t = self.share_threshold
        # a secret is rebuilt from its holders among the responders (everyone on the
        # complete graph: one set of coefficients serves every secret)
        interpolations: dict[tuple[int, ...], shamir.Interpolation] = {}

        def secret(owner: str, kind: str) -> bytes:
            holders = (self._closed(owner) if kind == "seed" else self.neighbours(owner)) & (
                self.unmasked.keys()
            )
            if len(holders) < t:
                raise ValueError(
                    f"{len(holders)} holders of the {kind} shares of {owner!r} answered, fewer "
                    f"than the threshold {t}"
                )
            shares = {
                points[h]: (
                    self.unmasked[h].self_mask_shares
                    if kind == "seed"
                    else self.unmasked[h].mask_key_shares
                )[owner]
                for h in holders
            }
            key = tuple(sorted(shares))
            if key not in interpolations:
                interpolations[key] = shamir.Interpolation(list(key), threshold=t)
            try:
                return interpolations[key].reconstruct(shares)
            except shamir.InconsistentShares as error:
                raise ValueError(f"the {kind} shares of {owner!r}: {error}") from error

        total = np.zeros(self.vector_length, dtype=np.uint32)
        for participant in self.survivors:
            total += np.frombuffer(self.masked[participant], dtype="<u4").astype(np.uint32)
        for participant in self.survivors:
            seed = secret(participant, "seed")
            expected = self.advertised[participant].self_mask_commitment
            if (
                self_mask_commitment(seed, context=self.context, participant=participant)
                != expected
            ):
                raise ValueError(f"the self-mask seed of {participant!r} fails its commitment")
            total -= mask_words(seed, self.vector_length)
        survivors = set(self.survivors)
        for gone in self.dropped:
            masked_with = sorted(self.neighbours(gone) & survivors)
            if not masked_with:
                continue  # no survivor masked with it: nothing to take away
            private = secret(gone, "key")
            if public_key_of(private) != self.advertised[gone].mask_key:
                raise ValueError(f"the mask key of {gone!r} does not match its public key")
            for participant in masked_with:
                seed = mask_seed(
                    private,
                    self.advertised[participant].mask_key,
                    context=self.context,
                    me=gone,
                    peer=participant,
                )
                # the survivor applied sign(survivor, gone) · PRG: take exactly that away
                pair = mask_words(seed, self.vector_length)
                total = total - pair if mask_sign(participant, gone) > 0 else total + pair
        return total

    # durable form ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state: what a store keeps between phases (bytes as base64)."""
        return {
            "federation_id": self.context.federation_id,
            "round": self.context.round_number,
            "threshold": self.threshold,
            "vector_length": self.vector_length,
            "clip": self.clip,
            "max_participants": self.max_participants,
            "graph": self.graph,
            "degree": self.degree,
            "neighbour_threshold": self.neighbour_threshold,
            "ring": list(self.ring),
            "phase": self.phase.value,
            "advertised": [self.advertised[p].to_dict() for p in sorted(self.advertised)],
            "shares": [self.shares[p].to_dict() for p in sorted(self.shares)],
            "masked": {p: b64(w) for p, w in sorted(self.masked.items())},
            "survivors": list(self.survivors),
            "dropped": list(self.dropped),
            "unmasked": [self.unmasked[p].to_dict() for p in sorted(self.unmasked)],
            "result": None if self.result is None else b64(self.result),
            "abort_reason": self.abort_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SecAggRound:
        """The state ``to_dict`` wrote (raises ``InvalidSecAggMessage`` if it is malformed)."""
        try:
            advertised = [AdvertiseKeys.from_dict(e) for e in data["advertised"]]
            shares = [ShareKeys.from_dict(e) for e in data["shares"]]
            unmasked = [UnmaskResponse.from_dict(e) for e in data["unmasked"]]
            return cls(
                context=RoundContext(str(data["federation_id"]), int(data["round"])),
                threshold=int(data["threshold"]),
                vector_length=int(data["vector_length"]),
                clip=float(data["clip"]),
                max_participants=int(data["max_participants"]),
                graph=str(data.get("graph", "complete")),
                degree=_optional_int(data.get("degree")),
                neighbour_threshold=_optional_int(data.get("neighbour_threshold")),
                ring=_ids(data.get("ring", [])),
                phase=Phase(data["phase"]),
                advertised={e.participant: e for e in advertised},
                shares={e.participant: e for e in shares},
                masked={p: unb64(w, what="masked") for p, w in data["masked"].items()},
                survivors=_ids(data["survivors"]),
                dropped=_ids(data["dropped"]),
                unmasked={e.participant: e for e in unmasked},
                result=None if data["result"] is None else unb64(data["result"], what="result"),
                abort_reason=data["abort_reason"],
            )
        except (KeyError, TypeError, ValueError, MessageError) as error:
            raise InvalidSecAggMessage(
                f"stored secure-aggregation state is malformed: {error}"
            ) from error
