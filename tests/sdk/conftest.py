"""Fixtures of the SDK tests: a fake coordinator and clients wired to it that never sleep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from participant_sdk import AsyncClient, Client

from .fake_coordinator import BASE_URL, PUBLIC_KEY, TOKEN, FakeCoordinator


@pytest.fixture
def fake() -> FakeCoordinator:
    return FakeCoordinator()


@pytest.fixture
def sleeps() -> list[float]:
    """The delays the clients would have slept, in order."""
    return []


@pytest.fixture
def client(fake: FakeCoordinator, sleeps: list[float]) -> Iterator[Client]:
    with Client(BASE_URL, TOKEN, transport=fake.transport, signing_key=PUBLIC_KEY) as sdk:
        sdk._sleep = sleeps.append
        yield sdk


@pytest.fixture
async def aclient(fake: FakeCoordinator, sleeps: list[float]) -> AsyncIterator[AsyncClient]:
    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with AsyncClient(
        BASE_URL, TOKEN, transport=fake.transport, signing_key=PUBLIC_KEY
    ) as sdk:
        sdk._sleep = record_sleep
        yield sdk
