"""Defaults of the participant SDK client, and the ``NOT_GIVEN`` sentinel.

Every number the client uses for timeouts, retries and long polling is named here so
it can be read (and overridden per client) in one place.
"""

from __future__ import annotations

from importlib import metadata
from typing import Final, Literal

import httpx

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "ENV_TOKEN",
    "ENV_URL",
    "INITIAL_RETRY_DELAY",
    "KEEPALIVE_EXPIRY",
    "LONG_POLL_MIN_INTERVAL",
    "LONG_POLL_READ_MARGIN",
    "MAX_LONG_POLL_WAIT",
    "MAX_RETRY_AFTER",
    "MAX_RETRY_DELAY",
    "RETRY_AFTER_JITTER",
    "NOT_GIVEN",
    "NotGiven",
    "USER_AGENT",
    "WAIT_JITTER",
    "WEIGHTS_CACHE_SIZE",
]

#: Per-request timeout: 60 s to read, write or wait for a pooled connection; 5 s to connect.
DEFAULT_TIMEOUT: Final = httpx.Timeout(60.0, connect=5.0)
#: Retries after the first attempt, for connection errors, timeouts, 408, 429 and 5xx.
DEFAULT_MAX_RETRIES: Final = 2
#: First backoff delay in seconds; doubles on each retry, with jitter.
INITIAL_RETRY_DELAY: Final = 0.5
#: Upper bound of the exponential backoff delay in seconds.
MAX_RETRY_DELAY: Final = 8.0
#: Upper bound in seconds on a server's ``Retry-After``: a larger value is clamped to this.
MAX_RETRY_AFTER: Final = 60.0
#: A retry after ``Retry-After`` waits that long plus up to this fraction more (never less),
#: so that participants refused in the same second do not all come back in the same second.
RETRY_AFTER_JITTER: Final = 0.25

#: The long-poll ``?wait=`` every coordinator accepts; one that advertises a longer maximum
#: (``Round.max_wait_seconds``) is asked for that much once a ``rounds.current`` showed it.
MAX_LONG_POLL_WAIT: Final = 60
#: A long-poll request's read timeout exceeds its ``wait`` by at least this many seconds:
#: a loaded coordinator answers a poll whose wait ran out late (10,000 waiting participants
#: on a starved machine: over a minute), and a read timeout then costs a second request.
#: A poll that times out anyway is asked again (``wait_for_next`` never gives up on it).
LONG_POLL_READ_MARGIN: Final = 60.0
#: How long an idle kept-alive connection is reused: longer than the longest wait after a
#: ``Retry-After`` (``MAX_RETRY_AFTER`` plus its jitter), so a refused participant comes
#: back on the connection it has instead of a new one (an accept the coordinator pays for).
#: The coordinator keeps idle connections longer still (``fedrec serve``: 90 s).
KEEPALIVE_EXPIRY: Final = 80.0
#: A long-poll sitting out rounds (``in_cohort``) asks for up to this fraction less than
#: the coordinator's maximum, at random: renewals of participants that joined together spread.
WAIT_JITTER: Final = 0.1
#: Seconds between long-polls when the server answers at once with nothing new.
LONG_POLL_MIN_INTERVAL: Final = 1.0

#: How many downloaded weight payloads a client keeps for ``If-None-Match`` revalidation.
WEIGHTS_CACHE_SIZE: Final = 8

#: Environment variables read when ``base_url`` or ``token`` is not passed.
ENV_URL: Final = "FEDREC_URL"
ENV_TOKEN: Final = "FEDREC_TOKEN"


def _sdk_version() -> str:
    try:
        return metadata.version("fedrec")
    except metadata.PackageNotFoundError:  # running from a source checkout
        return "0+unknown"


USER_AGENT: Final = f"fedrec-participant-sdk/{_sdk_version()}"


class NotGiven:
    """The type of :data:`NOT_GIVEN`, the marker of an argument that was not passed.

    It lets ``timeout=None`` (no timeout at all) differ from leaving ``timeout`` out
    (use the client's default).

    Examples
    --------
    >>> client.rounds.list(fid, timeout=None)  # wait as long as it takes
    >>> client.rounds.list(fid)  # the client's timeout
    """

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        # A singleton, so ``is NOT_GIVEN`` and ``isinstance(x, NotGiven)`` agree.
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()
