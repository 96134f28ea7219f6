"""The participant's side of secure aggregation: a state machine over the four phases.

``SecAggClient`` holds the round's secrets (two X25519 private keys, the self-mask seed,
the Shamir shares it received) in memory only. Each method takes the server's previous
answer, checks it, and returns the next message; a check that fails raises ``SecAggRefusal``
and returns nothing, so nothing is sent. In particular ``unmask`` refuses any request that
would let the server learn both masks of one participant (the only way to see an input):
a participant listed both alive and dropped, itself listed dropped, unknown or duplicate ids,
a partition that does not cover exactly the participants that shared keys, fewer survivors
than the threshold, or a second, different request.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from participant_sdk.secagg import shamir
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.keys import (
    RoundContext,
    derive_pair_key,
    mask_seed,
    mask_sign,
    self_mask_commitment,
)
from participant_sdk.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    Roster,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from participant_sdk.secagg.prg import mask_words

__all__ = ["SecAggClient", "SecAggRefusal", "share_plaintext_size"]

_NONCE_BYTES = 12
_SHARE_PURPOSE = "share"
# every client refuses a threshold this low: one colluder would then hold a whole secret
MIN_THRESHOLD = 2


def share_plaintext_size() -> int:
    """A share message's plaintext: a self-mask-seed share then a mask-key share."""
    return 2 * shamir.SHARE_BYTES


class SecAggRefusal(Exception):
    """The participant refuses the server's message; it sends nothing for it."""


def _private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


class SecAggClient:
    """One participant in one round of secure aggregation.

    Parameters
    ----------
    context:
        The federation and round; every message and key is bound to it.
    participant:
        This participant's id (the roster sorts by it; it decides the sign of pair masks).
    update:
        The float update to contribute; clipped and encoded with ``codec``.
    codec:
        The federation's fixed-point encoding (clip and maximum number of participants).
    """

    def __init__(
        self,
        *,
        context: RoundContext,
        participant: str,
        update: np.ndarray,
        codec: FixedPointCodec,
    ) -> None:
        self.context = context
        self.participant = participant
        self.codec = codec
        self._encoded = codec.encode(update)
        # fresh per round from the OS CSPRNG (X25519 generate uses it too)
        self._encryption_key = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._self_seed = secrets.token_bytes(32)
        self._phase = "advertise"
        self._roster: Roster | None = None
        self._own_shares: tuple[bytes, bytes] | None = None
        self._inbox: dict[str, bytes] = {}
        self._answered: tuple[UnmaskRequest, UnmaskResponse] | None = None

    @property
    def phase(self) -> str:
        """``advertise``, ``share``, ``masked``, ``unmask`` or ``done``."""
        return self._phase

    @property
    def encoded_input(self) -> np.ndarray:
        """The fixed-point input (uint32): what must never reach the server unmasked."""
        return self._encoded.copy()

    def _expect(self, phase: str, context: RoundContext) -> None:
        if self._phase != phase:
            raise SecAggRefusal(
                f"expected a message of phase {phase!r}, the client is in {self._phase!r}"
            )
        if context != self.context:
            raise SecAggRefusal(f"the message belongs to {context}, this client to {self.context}")

    # phase 1 -------------------------------------------------------------------------------
    def advertise(self) -> AdvertiseKeys:
        """Phase 1: the two public keys and the commitment to the self-mask seed."""
        if self._phase != "advertise":
            raise SecAggRefusal("keys are advertised once per round")
        self._phase = "share"
        return self._advertisement()

    def _advertisement(self) -> AdvertiseKeys:
        return AdvertiseKeys(
            context=self.context,
            participant=self.participant,
            encryption_key=self._encryption_key.public_key().public_bytes_raw(),
            mask_key=self._mask_key.public_key().public_bytes_raw(),
            self_mask_commitment=self_mask_commitment(
                self._self_seed, context=self.context, participant=self.participant
            ),
        )

    # phase 2 -------------------------------------------------------------------------------
    def share_keys(self, roster: Roster) -> ShareKeys:
        """Phase 2: Shamir-share the self-mask seed and the mask key, one ciphertext per peer
        of the roster (everyone, or our neighbours on a sparse graph)."""
        self._expect("share", roster.context)
        ids = [entry.participant for entry in roster.entries]
        if ids != sorted(set(ids)):
            raise SecAggRefusal("the roster must list each participant once, sorted by id")
        if self._advertisement() not in roster.entries:
            raise SecAggRefusal("the roster does not carry this participant's keys unchanged")
        keys = [e.encryption_key for e in roster.entries] + [e.mask_key for e in roster.entries]
        if len(set(keys)) != len(keys):
            raise SecAggRefusal("two public keys in the roster are equal")
        if not MIN_THRESHOLD <= roster.threshold <= len(ids):
            raise SecAggRefusal(
                f"threshold {roster.threshold} must be in {MIN_THRESHOLD}..{len(ids)} participants"
            )
        if roster.participants > self.codec.max_participants:
            raise SecAggRefusal(
                f"{roster.participants} participants exceed the encoding's "
                f"{self.codec.max_participants}"
            )
        if roster.vector_length != self._encoded.size:
            raise SecAggRefusal(
                f"the round sums {roster.vector_length} words, this update has {self._encoded.size}"
            )
        # x-coordinates: positions in the round; with a sparse graph only our neighbours'
        points = [roster.share_point(p) for p in ids]
        seed_shares = shamir.split(self._self_seed, xs=points, threshold=roster.threshold)
        key_shares = shamir.split(
            _private_bytes(self._mask_key), xs=points, threshold=roster.threshold
        )
        me = roster.share_point(self.participant)
        self._own_shares = (seed_shares[me], key_shares[me])
        ciphertexts = {}
        for point, entry in zip(points, roster.entries, strict=True):
            if entry.participant == self.participant:
                continue
            plaintext = seed_shares[point] + key_shares[point]
            ciphertexts[entry.participant] = self._seal(
                entry.participant, entry.encryption_key, plaintext
            )
        self._roster = roster
        self._phase = "masked"
        return ShareKeys(
            context=self.context, participant=self.participant, ciphertexts=ciphertexts
        )

    def _share_key(self, sender: str, recipient: str, peer_public_key: bytes) -> bytes:
        return derive_pair_key(
            _private_bytes(self._encryption_key),
            peer_public_key,
            context=self.context,
            purpose=_SHARE_PURPOSE,
            first=sender,
            second=recipient,
        )

    def _seal(self, recipient: str, public_key: bytes, plaintext: bytes) -> bytes:
        key = self._share_key(self.participant, recipient, public_key)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        data = self.context.bind(_SHARE_PURPOSE, self.participant, recipient)
        return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, data)

    def _open(self, sender: str, public_key: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
        key = self._share_key(sender, self.participant, public_key)
        data = self.context.bind(_SHARE_PURPOSE, sender, self.participant)
        try:
            plaintext = ChaCha20Poly1305(key).decrypt(
                ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:], data
            )
        except (InvalidTag, ValueError) as error:
            raise SecAggRefusal(f"the share message from {sender} does not authenticate") from error
        if len(plaintext) != share_plaintext_size():
            raise SecAggRefusal(f"the share message from {sender} has the wrong size")
        return plaintext[: shamir.SHARE_BYTES], plaintext[shamir.SHARE_BYTES :]

    # phase 3 -------------------------------------------------------------------------------
    def masked_input(self, inbox: ShareInbox) -> MaskedInput:
        """Phase 3: the encoded input plus the self mask plus the pair masks of all who shared."""
        self._expect("masked", inbox.context)
        roster = self._require_roster()
        if inbox.recipient != self.participant:
            raise SecAggRefusal("the inbox is addressed to another participant")
        known = {entry.participant for entry in roster.entries}
        senders = set(inbox.ciphertexts)
        if self.participant in senders or not senders <= known:
            raise SecAggRefusal("the inbox names senders outside the roster")
        if len(senders) + 1 < roster.threshold:
            raise SecAggRefusal(
                f"{len(senders) + 1} participants shared keys, "
                f"fewer than the threshold {roster.threshold}"
            )
        words = self._encoded + mask_words(self._self_seed, self._encoded.size)
        private = _private_bytes(self._mask_key)
        for entry in roster.entries:
            if entry.participant in senders:
                seed = mask_seed(
                    private,
                    entry.mask_key,
                    context=self.context,
                    me=self.participant,
                    peer=entry.participant,
                )
                pair = mask_words(seed, self._encoded.size)
                # uint32 arithmetic wraps: exactly the sum modulo 2^32
                words = (
                    words + pair
                    if mask_sign(self.participant, entry.participant) > 0
                    else words - pair
                )
        self._inbox = dict(inbox.ciphertexts)
        self._phase = "unmask"
        return MaskedInput(
            context=self.context, participant=self.participant, words=words.astype("<u4").tobytes()
        )

    # phase 4 -------------------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Phase 4: seed shares of the survivors, mask-key shares of the dropped; or refuse."""
        if self._answered is not None:
            answered_request, response = self._answered
            if request == answered_request:
                return response  # a retry of the same request: the same answer reveals nothing new
            raise SecAggRefusal("this participant already answered a different unmask request")
        self._expect("unmask", request.context)
        roster = self._require_roster()
        survivors, dropped = list(request.survivors), list(request.dropped)
        shared = set(self._inbox) | {self.participant}
        if len(set(survivors)) != len(survivors) or len(set(dropped)) != len(dropped):
            raise SecAggRefusal("the unmask request lists a participant twice")
        if set(survivors) & set(dropped):
            raise SecAggRefusal("the unmask request lists a participant both alive and dropped")
        if self.participant in dropped:
            raise SecAggRefusal("the unmask request lists this participant as dropped")
        if self.participant not in survivors:
            raise SecAggRefusal("the unmask request does not list this participant as a survivor")
        if not set(survivors) | set(dropped) <= shared:
            raise SecAggRefusal("the unmask request names participants that did not share keys")
        if set(survivors) | set(dropped) != shared:
            raise SecAggRefusal("the unmask request leaves out participants that shared keys")
        if len(survivors) < roster.threshold:
            raise SecAggRefusal(
                f"{len(survivors)} survivors are fewer than the threshold {roster.threshold}"
            )
        own = self._own_shares
        assert own is not None  # set with the roster
        opened = {self.participant: own}
        public = {entry.participant: entry.encryption_key for entry in roster.entries}
        for sender, ciphertext in self._inbox.items():
            opened[sender] = self._open(sender, public[sender], ciphertext)
        response = UnmaskResponse(
            context=self.context,
            participant=self.participant,
            self_mask_shares={v: opened[v][0] for v in survivors},
            mask_key_shares={v: opened[v][1] for v in dropped},
        )
        self._answered = (request, response)
        self._phase = "done"
        return response

    def _require_roster(self) -> Roster:
        if self._roster is None:
            raise SecAggRefusal("no roster received yet")
        return self._roster
