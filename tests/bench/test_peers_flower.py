"""The Flower comparison's fedrec participants (bench/peers/flower.py)."""

from __future__ import annotations

import pytest

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
