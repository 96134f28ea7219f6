"""``client.rounds``: read rounds, long-poll for the next one (alone or with its base
weights), force aggregation."""

from __future__ import annotations

import builtins
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from .._base_client import BaseClient, RequestOptions, TimeoutTypes, path_segment
from .._constants import LONG_POLL_MIN_INTERVAL, NOT_GIVEN, WAIT_JITTER, NotGiven
from .._exceptions import APIConnectionError, APIResponseValidationError, WaitTimeoutError
from ..types import ItemList, ModelVersion, Round
from ..wire import ROUND_HEADER, Encoding
from ._resource import AsyncAPIResource, SyncAPIResource
from .models import weights_from_response, weights_key

__all__ = ["AsyncRounds", "RoundWork", "Rounds"]


@dataclass(frozen=True)
class RoundWork:
    """A round (as :meth:`Rounds.current` answers it) and, when it has work for the caller,
    the tensors of its base version (verified as :meth:`Models.weights` verifies them)."""

    round: Round
    #: the base version's tensors; None: no work for the caller in ``round`` (not open,
    #: not drawn into it, or not numbered above the ``after`` asked with)
    weights: dict[str, npt.NDArray[np.generic]] | None


_Answer = TypeVar("_Answer", Round, RoundWork)

log = logging.getLogger("participant_sdk")


def _path(fid: str, suffix: str = "") -> str:
    return f"/v1/federations/{path_segment(fid)}/rounds{suffix}"


def _current_params(
    wait: float | None, after: int | None, in_cohort: bool = False
) -> dict[str, str | int | float]:
    params: dict[str, str | int | float] = {}
    if wait is not None:
        params["wait"] = wait
    if after is not None:
        params["after"] = after
    if in_cohort:
        params["in_cohort"] = "true"
    return params


def _check_wait_args(after: int, timeout: float) -> float:
    """Validate the arguments of ``wait_for_next``; return its monotonic deadline."""
    if after < 0:
        raise ValueError(f"after must be >= 0, got {after}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
    return time.monotonic() + timeout


def _held(wait: int, started: float) -> bool:
    """Whether the server held the long-poll for (about) the ``wait`` it was asked."""
    return wait >= 1 and time.monotonic() - started >= wait - 1


def _pause_before_next_poll(wait: int, started: float, deadline: float) -> float:
    """Seconds to pause before polling again (0 if the server held the poll as asked).

    A server that answers a long-poll early without news (or a zero ``wait`` near the
    deadline) would otherwise be polled in a tight loop.
    """
    now = time.monotonic()
    if _held(wait, started):
        return 0.0
    return max(0.0, min(LONG_POLL_MIN_INTERVAL, deadline - now))


def _next_wait(client: BaseClient, deadline: float, in_cohort: bool) -> int:
    """The ``wait`` of the next long-poll: until the deadline, at most the coordinator's
    maximum. A poll sitting out rounds (``in_cohort``) asks for up to ``WAIT_JITTER`` less,
    at random, so participants that joined together do not renew together for ever."""
    remaining = deadline - time.monotonic()
    if in_cohort:
        longest = client._wait_param(remaining, in_cohort=True)
        jitter = 1.0 - WAIT_JITTER * random.random()  # nosec B311 # spread, not a secret
        remaining = min(remaining, max(1.0, longest * jitter))
    return client._wait_param(remaining, in_cohort=in_cohort)


def _reask_delay(client: BaseClient, failures: int, deadline: float, error: Exception) -> float:
    """Seconds before asking again after a long-poll got no answer: it timed out (a loaded
    coordinator answers a poll late) or its connection dropped, after the client's own
    retries. Nothing is lost by asking again (a GET), so a waiting participant never gives
    up on it; the usual jittered back-off, at most until the deadline."""
    delay = min(client._retry_delay(failures, None), max(0.0, deadline - time.monotonic()))
    log.info("long-poll got no answer (%s); asking again in %.1fs", error, delay)
    return delay


def _timed_out(fid: str, after: int, timeout: float) -> WaitTimeoutError:
    return WaitTimeoutError(
        f"federation {fid}: no round after {after} within {timeout:g} s", after=after
    )


def _round_of(answer: Round | RoundWork) -> Round:
    return answer.round if isinstance(answer, RoundWork) else answer


def _round_weights_request(
    client: BaseClient,
    fid: str,
    wait: int | None,
    after: int | None,
    in_cohort: bool,
    encoding: Encoding | None,
    timeout: TimeoutTypes | NotGiven,
) -> RequestOptions:
    """``GET …/rounds/current/weights``, naming the bytes the client already holds for the
    federation (``If-None-Match``): a base among them comes back as a 304, not again."""
    params = _current_params(wait, after, in_cohort)
    if encoding is not None:
        params["encoding"] = encoding
    headers = {"Accept": "application/octet-stream"}
    held = client._weights_cache.etags(str(fid))
    if held:
        headers["If-None-Match"] = ", ".join(held)
    return RequestOptions(
        "GET",
        _path(fid, "/current/weights"),
        params=params,
        headers=headers,
        timeout=client._long_poll_timeout(wait, timeout),
    )


def _round_work(
    client: BaseClient,
    response: httpx.Response,
    fid: str,
    encoding: Encoding | None,
    public_key: str,
) -> tuple[Round, dict[str, npt.NDArray[np.generic]] | None, bool]:
    """The round of a ``…/rounds/current/weights`` answer, its base's tensors (None on a
    204), and whether they must still be downloaded on their own: a 304 for bytes the
    client holds under another version (the same bytes, another signed manifest)."""
    raw = response.headers.get(ROUND_HEADER)
    try:
        current = Round.model_validate_json(raw or "")
    except ValidationError as err:
        raise APIResponseValidationError(
            f"{response.status_code} answer of {response.request.url} has no valid "
            f"{ROUND_HEADER} header: {err.errors()[0]['msg']}",
            response=response,
        ) from None
    client._learn_max_wait(current.max_wait_seconds, current.max_cohort_wait_seconds)
    if response.status_code == 204:
        return current, None, False
    if response.status_code not in (200, 304):
        raise APIResponseValidationError(
            f"unexpected {response.status_code} answer of {response.request.url}",
            response=response,
        )
    cache = client._weights_cache
    key = weights_key(fid, current.base_version, encoding)
    cached = None
    if response.status_code == 304:
        cached = cache.get(key)
        if cached is None or cached.etag != response.headers.get("etag"):
            return current, None, True
    weights = weights_from_response(
        cache,
        key,
        cached,
        response,
        public_key,
        fid=fid,
        version=current.base_version,
        asked=encoding,
    )
    return current, weights, False


class Rounds(SyncAPIResource):
    """The training rounds of a federation."""

    def current(
        self,
        fid: str,
        wait: float | None = None,
        after: int | None = None,
        *,
        in_cohort: bool = False,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Round:
        """The federation's current round, optionally long-polling for a newer one.

        Parameters
        ----------
        fid : str
            The federation id.
        wait : float, optional
            Seconds (whole; at most the coordinator's advertised ``max_wait_seconds``, 60
            until a ``current`` answer showed it) the coordinator may hold the request until
            the current round's number exceeds ``after`` or the federation stops being
            active. The read timeout is extended beyond ``wait`` automatically.
        after : int, optional
            The round number the caller already knows.
        in_cohort : bool, optional
            With ``after``, under client sampling: also wait through the rounds this
            participant was not drawn into (the coordinator answers for a round it takes
            part in, when training stops, or when ``wait`` passes).
        timeout : float, httpx.Timeout or None, optional
            Overrides the client's timeout for this call.

        Returns
        -------
        Round
            The current round (on a long-poll, possibly still ``number <= after``).
        """
        cohort = in_cohort and after is not None
        wait_s = None if wait is None else self._client._wait_param(wait, in_cohort=cohort)
        current = self._client._get(
            _path(fid, "/current"),
            Round,
            params=_current_params(wait_s, after, in_cohort),
            timeout=self._client._long_poll_timeout(wait_s, timeout),
        )
        self._client._learn_max_wait(current.max_wait_seconds, current.max_cohort_wait_seconds)
        return current

    def wait_for_next(
        self, fid: str, after: int, timeout: float, *, in_cohort: bool = False
    ) -> Round:
        """Long-poll until a round numbered above ``after`` is current.

        Polls ``GET .../rounds/current?wait=S&after=N`` repeatedly (``S`` up to the
        coordinator's advertised ``max_wait_seconds``, and at most the client's
        ``max_long_poll_wait``).

        Parameters
        ----------
        fid : str
            The federation id.
        after : int
            The last round number the caller has seen (0 before the first round).
        timeout : float
            Give up after this many seconds (``math.inf`` waits as long as it takes).
        in_cohort : bool, optional
            Under client sampling, wait for a round this participant was drawn into: the
            rounds it sits out cost it (and the coordinator) no request.

        Returns
        -------
        Round
            The new current round, with ``number > after``; or, once the federation is no
            longer active, its last round (``number <= after``): check
            ``round.number > after`` to tell them apart.

        Raises
        ------
        WaitTimeoutError
            If no newer round appeared within ``timeout`` seconds.

        A poll that gets no answer (it timed out: a loaded coordinator answers late; or
        its connection dropped) is asked again after a jittered back-off, until
        ``timeout``: waiting never gives up on a transport error. With ``in_cohort`` each
        poll asks for up to 10 % less than the coordinator's ``max_cohort_wait_seconds``,
        at random, so participants that joined together renew apart.
        """
        return self._wait(
            fid,
            after,
            timeout,
            in_cohort,
            lambda wait: self.current(fid, wait=wait, after=after, in_cohort=in_cohort),
        )

    def current_with_weights(
        self,
        fid: str,
        wait: float | None = None,
        after: int | None = None,
        *,
        in_cohort: bool = False,
        encoding: Encoding | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> RoundWork:
        """The current round and, when it has work for the caller, its base weights: one
        request (``GET …/rounds/current/weights``) instead of :meth:`current` and then
        :meth:`Models.weights`.

        ``wait``, ``after`` and ``in_cohort`` are :meth:`current`'s; ``encoding`` is
        :meth:`Models.weights`'s. Work means the round is open, the caller takes part in it
        (``in_cohort`` is not false) and, with ``after``, its number exceeds ``after``.
        The weights are verified as :meth:`Models.weights` verifies them (sha256 ``ETag``,
        manifest signed by the pinned key naming this federation and ``base_version``) and
        cached: the request names the bytes the client holds for the federation
        (``If-None-Match``), so a base it already has is not sent again.

        Returns
        -------
        RoundWork
            ``round``, and ``weights`` (None when there is no work for the caller).

        Raises
        ------
        NotFoundError
            If there is no such federation, or the coordinator predates this route
            (``GET …/rounds/current`` and ``…/models/{version}/weights`` then do the same in
            two requests).
        """
        public_key = self._client.signing_key or self._client.models._pin(timeout)
        cohort = in_cohort and after is not None
        wait_s = None if wait is None else self._client._wait_param(wait, in_cohort=cohort)
        options = _round_weights_request(
            self._client, fid, wait_s, after, in_cohort, encoding, timeout
        )
        response = self._client._request(options)
        current, weights, download = _round_work(self._client, response, fid, encoding, public_key)
        if download:
            weights = self._client.models.weights(
                fid, current.base_version, encoding=encoding, timeout=timeout
            )
        return RoundWork(current, weights)

    def wait_for_work(
        self,
        fid: str,
        after: int,
        timeout: float,
        *,
        in_cohort: bool = False,
        encoding: Encoding | None = None,
    ) -> RoundWork:
        """:meth:`wait_for_next` whose answer carries the new round's base weights when it
        has work for the caller (:meth:`current_with_weights` long-polled): one request
        per round to learn of it and get what to train from.

        Returns
        -------
        RoundWork
            As :meth:`wait_for_next` returns its round (``round.number > after``, or the
            federation's last round once it is no longer active), with ``weights``.

        Raises
        ------
        WaitTimeoutError
            If no newer round appeared within ``timeout`` seconds.
        """
        return self._wait(
            fid,
            after,
            timeout,
            in_cohort,
            lambda wait: self.current_with_weights(
                fid, wait=wait, after=after, in_cohort=in_cohort, encoding=encoding
            ),
        )

    def _wait(
        self,
        fid: str,
        after: int,
        timeout: float,
        in_cohort: bool,
        poll: Callable[[int], _Answer],
    ) -> _Answer:
        """Long-poll with ``poll(wait)`` until its round is numbered above ``after`` (or the
        federation stopped); the loop of :meth:`wait_for_next`."""
        deadline = _check_wait_args(after, timeout)
        failures = 0
        while True:
            wait = _next_wait(self._client, deadline, in_cohort)
            started = time.monotonic()
            try:
                answer = poll(wait)
            except APIConnectionError as exc:  # timed out, or the connection dropped
                if time.monotonic() >= deadline:
                    raise _timed_out(fid, after, timeout) from exc
                self._client._sleep(_reask_delay(self._client, failures, deadline, exc))
                failures += 1
                continue
            failures = 0
            if _round_of(answer).number > after:
                return answer
            # a poll held its whole wait saw nothing: the coordinator answers at once when
            # training stops, so only an early answer needs the federation read
            if not _held(wait, started) and self._client.federations.get(fid).state != "active":
                return answer
            if time.monotonic() >= deadline:
                raise _timed_out(fid, after, timeout)
            pause = _pause_before_next_poll(wait, started, deadline)
            if pause > 0:
                self._client._sleep(pause)

    def list(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> builtins.list[Round]:
        """Every round of the federation, oldest first."""
        return self._client._get(_path(fid), ItemList[Round], timeout=timeout).items

    def get(self, fid: str, n: int, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> Round:
        """Round number ``n``.

        Raises
        ------
        NotFoundError
            If the round does not exist (``round-not-found``).
        """
        return self._client._get(_path(fid, f"/{int(n)}"), Round, timeout=timeout)

    def aggregate(
        self, fid: str, n: int, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> ModelVersion:
        """Close round ``n`` now and aggregate its updates (admin).

        Returns
        -------
        ModelVersion
            The model version the round produced.

        Raises
        ------
        RoundNotOpenError
            If the round is not open.
        NoUpdatesError
            If nothing was uploaded for it.
        """
        path = _path(fid, f"/{int(n)}/aggregate")
        return self._client._post(path, ModelVersion, timeout=timeout)


class AsyncRounds(AsyncAPIResource):
    """The training rounds of a federation (async twin of :class:`Rounds`)."""

    async def current(
        self,
        fid: str,
        wait: float | None = None,
        after: int | None = None,
        *,
        in_cohort: bool = False,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Round:
        """The current round, optionally long-polling; see :meth:`Rounds.current`."""
        cohort = in_cohort and after is not None
        wait_s = None if wait is None else self._client._wait_param(wait, in_cohort=cohort)
        current = await self._client._get(
            _path(fid, "/current"),
            Round,
            params=_current_params(wait_s, after, in_cohort),
            timeout=self._client._long_poll_timeout(wait_s, timeout),
        )
        self._client._learn_max_wait(current.max_wait_seconds, current.max_cohort_wait_seconds)
        return current

    async def wait_for_next(
        self, fid: str, after: int, timeout: float, *, in_cohort: bool = False
    ) -> Round:
        """Long-poll until a round numbered above ``after`` is current.

        See :meth:`Rounds.wait_for_next`.
        """
        return await self._wait(
            fid,
            after,
            timeout,
            in_cohort,
            lambda wait: self.current(fid, wait=wait, after=after, in_cohort=in_cohort),
        )

    async def current_with_weights(
        self,
        fid: str,
        wait: float | None = None,
        after: int | None = None,
        *,
        in_cohort: bool = False,
        encoding: Encoding | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> RoundWork:
        """The current round and its base weights in one request; see
        :meth:`Rounds.current_with_weights`."""
        public_key = self._client.signing_key or await self._client.models._pin(timeout)
        cohort = in_cohort and after is not None
        wait_s = None if wait is None else self._client._wait_param(wait, in_cohort=cohort)
        options = _round_weights_request(
            self._client, fid, wait_s, after, in_cohort, encoding, timeout
        )
        response = await self._client._request(options)
        current, weights, download = _round_work(self._client, response, fid, encoding, public_key)
        if download:
            weights = await self._client.models.weights(
                fid, current.base_version, encoding=encoding, timeout=timeout
            )
        return RoundWork(current, weights)

    async def wait_for_work(
        self,
        fid: str,
        after: int,
        timeout: float,
        *,
        in_cohort: bool = False,
        encoding: Encoding | None = None,
    ) -> RoundWork:
        """Long-poll for the next round with its base weights; see
        :meth:`Rounds.wait_for_work`."""
        return await self._wait(
            fid,
            after,
            timeout,
            in_cohort,
            lambda wait: self.current_with_weights(
                fid, wait=wait, after=after, in_cohort=in_cohort, encoding=encoding
            ),
        )

    async def _wait(
        self,
        fid: str,
        after: int,
        timeout: float,
        in_cohort: bool,
        poll: Callable[[int], Awaitable[_Answer]],
    ) -> _Answer:
        """The loop of :meth:`Rounds._wait`, awaiting."""
        deadline = _check_wait_args(after, timeout)
        failures = 0
        while True:
            wait = _next_wait(self._client, deadline, in_cohort)
            started = time.monotonic()
            try:
                answer = await poll(wait)
            except APIConnectionError as exc:  # timed out, or the connection dropped
                if time.monotonic() >= deadline:
                    raise _timed_out(fid, after, timeout) from exc
                await self._client._sleep(_reask_delay(self._client, failures, deadline, exc))
                failures += 1
                continue
            failures = 0
            if _round_of(answer).number > after:
                return answer
            if not _held(wait, started) and (await self._client.federations.get(fid)).state != (
                "active"
            ):
                return answer
            if time.monotonic() >= deadline:
                raise _timed_out(fid, after, timeout)
            pause = _pause_before_next_poll(wait, started, deadline)
            if pause > 0:
                await self._client._sleep(pause)

    async def list(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> builtins.list[Round]:
        """Every round of the federation, oldest first."""
        return (await self._client._get(_path(fid), ItemList[Round], timeout=timeout)).items

    async def get(self, fid: str, n: int, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> Round:
        """Round number ``n``."""
        return await self._client._get(_path(fid, f"/{int(n)}"), Round, timeout=timeout)

    async def aggregate(
        self, fid: str, n: int, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> ModelVersion:
        """Close round ``n`` now and aggregate its updates (admin)."""
        path = _path(fid, f"/{int(n)}/aggregate")
        return await self._client._post(path, ModelVersion, timeout=timeout)
