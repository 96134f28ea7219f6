"""What travels between the phases, as plain data both sides share.

Phases (Bonawitz et al. 2017, honest-but-curious server):

1. advertise keys: each participant sends ``AdvertiseKeys``; the server answers ``Roster``;
2. share keys: each sends ``ShareKeys`` (one ciphertext per other participant); the server
   routes them as one ``ShareInbox`` per recipient;
3. masked input: each sends ``MaskedInput``; the server answers ``UnmaskRequest``;
4. unmask: each survivor sends ``UnmaskResponse``; the server reconstructs the sum.

Every message names its round (``RoundContext``) and its sender; the cryptographic binding
(HKDF info, AEAD associated data, the mask seeds) makes the names impossible to change
unnoticed. ``to_dict``/``from_dict`` give JSON-ready data (bytes as base64), which is how a
durable store or a REST body holds them; ``from_dict`` validates every field.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from participant_sdk.secagg.keys import KEY_BYTES, RoundContext

__all__ = [
    "AdvertiseKeys",
    "MaskedInput",
    "MessageError",
    "Roster",
    "ShareInbox",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskResponse",
    "b64",
    "unb64",
]


class MessageError(ValueError):
    """A message is malformed: a field is missing, of the wrong type or size."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, *, size: int | None = None, what: str = "field") -> bytes:
    if not isinstance(text, str):
        raise MessageError(f"{what} must be a base64 string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as error:
        raise MessageError(f"{what} is not valid base64") from error
    if size is not None and len(data) != size:
        raise MessageError(f"{what} must be {size} bytes, got {len(data)}")
    return data


def _context(data: Mapping[str, Any]) -> RoundContext:
    federation, round_number = data.get("federation_id"), data.get("round")
    if not isinstance(federation, str) or not isinstance(round_number, int):
        raise MessageError("a message needs federation_id (string) and round (integer)")
    try:
        return RoundContext(federation, round_number)
    except ValueError as error:
        raise MessageError(str(error)) from error


def _participant(value: Any, what: str = "participant") -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise MessageError(f"{what} must be a participant id (1..64 characters)")
    return value


def _byte_map(value: Any, what: str, size: int | None = None) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise MessageError(f"{what} must be an object of participant id to base64")
    return {
        _participant(k, what): unb64(v, size=size, what=f"{what}[{k}]") for k, v in value.items()
    }


def _ids(value: Any, what: str) -> list[str]:
    if not isinstance(value, list):
        raise MessageError(f"{what} must be a list of participant ids")
    return [_participant(v, what) for v in value]


def _head(context: RoundContext) -> dict[str, Any]:
    return {"federation_id": context.federation_id, "round": context.round_number}


@dataclass(frozen=True)
class AdvertiseKeys:
    """Phase 1: a participant's two public keys and its commitment to its self-mask seed."""

    context: RoundContext
    participant: str
    encryption_key: bytes
    mask_key: bytes
    self_mask_commitment: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            **_head(self.context),
            "participant": self.participant,
            "encryption_key": b64(self.encryption_key),
            "mask_key": b64(self.mask_key),
            "self_mask_commitment": b64(self.self_mask_commitment),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdvertiseKeys:
        return cls(
            context=_context(data),
            participant=_participant(data.get("participant")),
            encryption_key=unb64(data.get("encryption_key"), size=KEY_BYTES, what="encryption_key"),
            mask_key=unb64(data.get("mask_key"), size=KEY_BYTES, what="mask_key"),
            self_mask_commitment=unb64(
                data.get("self_mask_commitment"), size=32, what="self_mask_commitment"
            ),
        )


@dataclass(frozen=True)
class Roster:
    """The server's answer to phase 1: whom this participant shares with, sorted by id.

    With the complete graph, everyone (x = position + 1, ``points`` None). With a sparse
    graph (SecAgg+), the participant and its neighbours only, each with its Shamir
    x-coordinate in ``points`` (its position in the whole round), ``threshold`` the
    neighbourhood's, and ``size`` the number of participants in the round.
    """

    context: RoundContext
    threshold: int
    vector_length: int
    entries: tuple[AdvertiseKeys, ...]
    points: Mapping[str, int] | None = None
    size: int | None = None

    @property
    def participants(self) -> int:
        """How many take part in the round (the entries, unless a sparse graph says more)."""
        return self.size if self.size is not None else len(self.entries)

    def share_point(self, participant: str) -> int:
        """The participant's Shamir x-coordinate: its 1-based position in the round."""
        if self.points is not None:
            return self.points[participant]
        for index, entry in enumerate(self.entries):
            if entry.participant == participant:
                return index + 1
        raise KeyError(participant)

    def to_dict(self) -> dict[str, Any]:
        out = {
            **_head(self.context),
            "threshold": self.threshold,
            "vector_length": self.vector_length,
            "entries": [entry.to_dict() for entry in self.entries],
        }
        if self.points is not None:
            out["points"] = dict(sorted(self.points.items()))
            out["size"] = self.size
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Roster:
        threshold, length, entries = (
            data.get("threshold"),
            data.get("vector_length"),
            data.get("entries"),
        )
        if (
            not isinstance(threshold, int)
            or not isinstance(length, int)
            or not isinstance(entries, list)
        ):
            raise MessageError("a roster needs threshold, vector_length and entries")
        parsed = tuple(AdvertiseKeys.from_dict(entry) for entry in entries)
        points, size = data.get("points"), data.get("size")
        if points is not None:
            if not isinstance(points, dict) or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in points.values()
            ):
                raise MessageError("points must be an object of participant id to x >= 1")
            if set(points) != {entry.participant for entry in parsed}:
                raise MessageError("points must name exactly the roster's participants")
            if len(set(points.values())) != len(points):
                raise MessageError("two participants share a Shamir point")
            if not isinstance(size, int) or size < max(points.values()):
                raise MessageError("a sparse roster needs size, at least its largest point")
        elif size is not None:
            raise MessageError("size comes with points (a sparse graph's roster)")
        return cls(
            context=_context(data),
            threshold=threshold,
            vector_length=length,
            entries=parsed,
            points=None if points is None else {str(k): int(v) for k, v in points.items()},
            size=size,
        )


@dataclass(frozen=True)
class ShareKeys:
    """Phase 2: the sender's encrypted shares, one ciphertext per recipient."""

    context: RoundContext
    participant: str
    ciphertexts: Mapping[str, bytes]

    def to_dict(self) -> dict[str, Any]:
        return {
            **_head(self.context),
            "participant": self.participant,
            "ciphertexts": {k: b64(v) for k, v in sorted(self.ciphertexts.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShareKeys:
        return cls(
            context=_context(data),
            participant=_participant(data.get("participant")),
            ciphertexts=_byte_map(data.get("ciphertexts"), "ciphertexts"),
        )


@dataclass(frozen=True)
class ShareInbox:
    """The server's answer to phase 2, for one recipient: the ciphertexts addressed to it."""

    context: RoundContext
    recipient: str
    ciphertexts: Mapping[str, bytes]

    def to_dict(self) -> dict[str, Any]:
        return {
            **_head(self.context),
            "recipient": self.recipient,
            "ciphertexts": {k: b64(v) for k, v in sorted(self.ciphertexts.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShareInbox:
        return cls(
            context=_context(data),
            recipient=_participant(data.get("recipient"), "recipient"),
            ciphertexts=_byte_map(data.get("ciphertexts"), "ciphertexts"),
        )


@dataclass(frozen=True)
class MaskedInput:
    """Phase 3: the participant's encoded input plus its masks, uint32 little-endian words."""

    context: RoundContext
    participant: str
    words: bytes

    def to_dict(self) -> dict[str, Any]:
        return {**_head(self.context), "participant": self.participant, "words": b64(self.words)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaskedInput:
        return cls(
            context=_context(data),
            participant=_participant(data.get("participant")),
            words=unb64(data.get("words"), what="words"),
        )


@dataclass(frozen=True)
class UnmaskRequest:
    """The server's answer to phase 3: who uploaded (survivors) and who did not (dropped)."""

    context: RoundContext
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            **_head(self.context),
            "survivors": list(self.survivors),
            "dropped": list(self.dropped),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnmaskRequest:
        return cls(
            context=_context(data),
            survivors=tuple(_ids(data.get("survivors"), "survivors")),
            dropped=tuple(_ids(data.get("dropped"), "dropped")),
        )


@dataclass(frozen=True)
class UnmaskResponse:
    """Phase 4: shares of each survivor's self-mask seed and each dropped one's mask key."""

    context: RoundContext
    participant: str
    self_mask_shares: Mapping[str, bytes] = field(default_factory=dict)
    mask_key_shares: Mapping[str, bytes] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **_head(self.context),
            "participant": self.participant,
            "self_mask_shares": {k: b64(v) for k, v in sorted(self.self_mask_shares.items())},
            "mask_key_shares": {k: b64(v) for k, v in sorted(self.mask_key_shares.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnmaskResponse:
        return cls(
            context=_context(data),
            participant=_participant(data.get("participant")),
            self_mask_shares=_byte_map(data.get("self_mask_shares"), "self_mask_shares"),
            mask_key_shares=_byte_map(data.get("mask_key_shares"), "mask_key_shares"),
        )
