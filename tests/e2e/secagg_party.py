"""A secure-aggregation participant that SIGKILLs itself mid-protocol (a real dropout).

``python -m tests.e2e.secagg_party URL TOKEN FID ROUND PID SEED LENGTH STOP_AFTER``: it
advertises its keys, then runs the phases up to ``STOP_AFTER`` (``shares`` or
``masked-input``) and kills its own process: no goodbye, no cleanup. Its update is
:func:`party_update` of ``SEED``, so the test knows what the sum must hold.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from participant_sdk import Client
from participant_sdk.secagg.client import SecAggClient
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.keys import RoundContext
from participant_sdk.secagg.messages import Roster, ShareInbox
from participant_sdk.secagg.session import clip_to_norm


def party_update(seed: int, length: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(length) * 0.3


def _wait(client: Client, fid: str, number: int, leave: str) -> dict:
    for _ in range(600):  # bounded: 60 s
        status = client.secagg.status(fid, number)
        if status.phase != leave:
            return status.model_dump()
        time.sleep(0.1)
    raise TimeoutError(f"phase {leave} did not close")


def main(
    url: str, token: str, fid: str, number: int, pid: str, seed: int, length: int, stop: str
) -> None:
    with Client(url, token) as client:
        status = client.secagg.status(fid, number)
        codec = FixedPointCodec(clip=status.clip_norm, max_participants=status.max_participants)
        update = clip_to_norm(party_update(seed, length), status.clip_norm)
        machine = SecAggClient(
            context=RoundContext(fid, number), participant=pid, update=update, codec=codec
        )
        client.secagg.send(fid, number, "keys", machine.advertise().to_dict())
        roster = Roster.from_dict(_wait(client, fid, number, "advertise")["roster"])
        client.secagg.send(fid, number, "shares", machine.share_keys(roster).to_dict())
        if stop == "masked-input":
            inbox = ShareInbox.from_dict(_wait(client, fid, number, "share")["inbox"])
            client.secagg.send(fid, number, "masked-input", machine.masked_input(inbox).to_dict())
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    url, token, fid, number, pid, seed, length, stop = sys.argv[1:9]
    main(url, token, fid, int(number), pid, int(seed), int(length), stop)
