"""The Flower comparison's fedrec participants (bench/peers/flower.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from bench.peers import flower
from bench.peers.flower import participant_clients
from participant_sdk import KeepAliveTransport


def test_the_participants_use_the_sdks_keep_alive_transport_with_their_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for scheme in ("http", "https", "all"):
        for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            monkeypatch.delenv(name, raising=False)
    clients = participant_clients("http://127.0.0.1:1", ["t0", "t1"])
    try:
        assert [c.headers["Authorization"] for c in clients] == ["Bearer t0", "Bearer t1"]
        assert all(isinstance(c._transport, KeepAliveTransport) for c in clients)
        assert clients[0]._transport is not clients[1]._transport  # a connection each
    finally:
        for client in clients:
            client.close()


def test_the_admin_long_polls_for_the_next_round_while_the_participants_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each round ends with the answer of one long-poll issued with the round (not asked
    once the participants returned): it is the next round, and it started waiting before
    the round's last upload was answered."""
    events: list[tuple[str, int]] = []
    lock = threading.Lock()
    next_round = flower._next_round

    def long_poll(admin: Any, path: str, number: int) -> dict[str, object]:
        with lock:
            events.append(("poll", number))
        answer = next_round(admin, path, number)
        assert answer["number"] == number + 1
        return answer

    once_more = flower._once_more

    def uploaded(call: Any) -> Any:
        response = once_more(call)
        if response.request.method == "PUT":
            with lock:
                events.append(("upload", int(response.request.url.path.split("/")[-2])))
        return response

    monkeypatch.setattr(flower, "_next_round", long_poll)
    monkeypatch.setattr(flower, "_once_more", uploaded)
    seconds = flower.fedrec_rounds(flower.Case(2, 20), 3, tmp_path)
    assert len(seconds) == 3
    for number in (1, 2, 3):
        mine = [kind for kind, n in events if n == number]
        assert mine.count("poll") == 1
        assert mine.count("upload") == 2
        assert mine.index("poll") < len(mine) - 1  # waiting before the last upload returned


def test_a_rounds_urls_are_absolute_and_parsed_once_for_its_participants() -> None:
    urls = flower.round_urls("http://127.0.0.1:1", "fed", 3, 2)
    assert str(urls.weights) == "http://127.0.0.1:1/v1/federations/fed/models/2/weights"
    assert str(urls.upload) == "http://127.0.0.1:1/v1/federations/fed/rounds/3/update"
    [client] = participant_clients("http://127.0.0.1:1", ["t0"])
    try:  # a client's base_url leaves an absolute URL as it is
        assert client.build_request("GET", urls.weights).url == urls.weights
    finally:
        client.close()


def test_the_durable_floor_writes_the_rounds_bytes_and_syncs_once_a_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    syncs: list[int] = []
    real_pwrite = os.pwrite
    real_fdatasync = os.fdatasync

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        writes.append(len(data))
        return real_pwrite(fd, data, offset)

    def fdatasync(fd: int) -> None:
        syncs.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    case = flower.Case(3, 20)
    seconds = flower.durable_floor_seconds(case, 4, tmp_path)
    assert len(seconds) == 4
    assert all(s > 0 for s in seconds)
    # K + 1 blobs of P float32 once to allocate, then once per round; one sync per round
    assert writes == [case.params * 4] * (case.participants + 1) * 5
    assert len(syncs) == 4
    assert list(tmp_path.iterdir()) == []  # the file is removed
