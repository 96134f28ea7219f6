"""The coordinator clients: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both have the same resources and methods; each async method is the coroutine twin of
its sync namesake. Example::

    from participant_sdk import Client

    with Client("http://localhost:8000", token) as client:
        round_ = client.rounds.current(fid)
        weights = client.models.weights(fid, round_.base_version)
        ...
        client.updates.submit(fid, round_.number, deltas,
                              base_version=round_.base_version, num_examples=n)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import cached_property
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from ._base_client import BaseClient, RequestOptions, TimeoutTypes, path_segment
from ._constants import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    KEEPALIVE_EXPIRY,
    NOT_GIVEN,
    NotGiven,
)
from ._exceptions import _make_status_error
from .resources.admin_tokens import AdminTokens, AsyncAdminTokens
from .resources.deployment import AsyncDeployments, Deployments
from .resources.evaluations import AsyncEvaluations, Evaluations
from .resources.federations import AsyncFederations, Federations
from .resources.models import AsyncModels, Models
from .resources.participants import AsyncParticipants, Participants
from .resources.rounds import AsyncRounds, Rounds
from .resources.secagg import AsyncSecAgg, SecAgg
from .resources.updates import AsyncUpdates, Updates
from .types import Health, ItemList, MetricsRow

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")


# httpx's defaults, but idle connections kept past the longest Retry-After wait
_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY
)


def _metrics_path(fid: str) -> str:
    return f"/v1/federations/{path_segment(fid)}/metrics"


class Client(BaseClient):
    """A blocking client of the fedrec coordinator.

    Parameters
    ----------
    base_url : str, optional
        The coordinator's root URL, e.g. ``"http://localhost:8000"`` (without ``/v1``).
        Defaults to the ``FEDREC_URL`` environment variable.
    token : str, optional
        The admin or participant bearer token. Defaults to ``FEDREC_TOKEN``.
    timeout : float, httpx.Timeout or None
        Default timeout of each request attempt (``DEFAULT_TIMEOUT``: 60 s, 5 s to
        connect); ``None`` waits forever. Long-polls extend the read timeout as needed.
    max_retries : int
        Retries after the first attempt on connection errors, timeouts, 408, 429 and 5xx
        (``DEFAULT_MAX_RETRIES`` = 2). 409 and other 4xx are never retried.
    http_client : httpx.Client, optional
        An httpx client to send requests with (proxies, certificates, an ASGI app in
        tests). The SDK does not close a client it was given.
    transport : httpx.BaseTransport, optional
        A transport for the SDK's own httpx client, e.g. ``httpx.MockTransport``.
        Mutually exclusive with ``http_client``. httpx's own by default;
        :func:`participant_sdk.keep_alive_transport` sends plain ``http://`` with the
        standard library's ``http.client`` at a fraction of the CPU per request (what
        ``fedrec simulate`` gives its simulated participants on loopback).
    signing_key : str, optional
        The coordinator's Ed25519 public key (base64). Every model the client downloads
        must carry a manifest signed by it (:class:`ModelSignatureError` otherwise).
        Unset, the key is fetched on the first download and pinned for the client's life.

    Raises
    ------
    FedrecError
        If neither ``base_url``/``FEDREC_URL`` nor ``token``/``FEDREC_TOKEN`` is set.

    Examples
    --------
    >>> with Client("http://localhost:8000", token) as client:
    ...     client.health().status
    'ok'
    """

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        token: str | None = None,
        *,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        signing_key: str | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            token=token,
            timeout=timeout,
            max_retries=max_retries,
            signing_key=signing_key,
        )
        if http_client is not None and transport is not None:
            raise ValueError("pass either http_client or transport, not both")
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise TypeError(f"http_client must be an httpx.Client, got {type(http_client)!r}")
        self._owns_http = http_client is None
        self._http: httpx.Client = http_client or httpx.Client(
            transport=transport, timeout=timeout, limits=_LIMITS
        )
        #: How the client waits between retries; tests replace it to skip the wait.
        self._sleep: Callable[[float], None] = time.sleep

    # --- resources --------------------------------------------------------------------------

    @cached_property
    def federations(self) -> Federations:
        """Create, list and read federations, and their item catalog."""
        return Federations(self)

    @cached_property
    def participants(self) -> Participants:
        """Enrol, list, read and revoke participants."""
        return Participants(self)

    @cached_property
    def admin_tokens(self) -> AdminTokens:
        """Create, list and revoke admin tokens (admin)."""
        return AdminTokens(self)

    @cached_property
    def rounds(self) -> Rounds:
        """Read rounds, long-poll for the next one, and force aggregation."""
        return Rounds(self)

    @cached_property
    def secagg(self) -> SecAgg:
        """The secure-aggregation phases of a round (see ``participant_sdk.secagg``)."""
        return SecAgg(self)

    @cached_property
    def models(self) -> Models:
        """Model versions and their weights."""
        return Models(self)

    @cached_property
    def updates(self) -> Updates:
        """Upload model updates."""
        return Updates(self)

    @cached_property
    def evaluations(self) -> Evaluations:
        """Report local evaluation metrics."""
        return Evaluations(self)

    @cached_property
    def deployment(self) -> Deployments:
        """Read, promote and roll back the deployed model version."""
        return Deployments(self)

    def health(self, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> Health:
        """Check that the coordinator is up (``GET /healthz``).

        Returns
        -------
        Health
            ``status == "ok"`` when it serves.
        """
        return self._get("/healthz", Health, timeout=timeout)

    def metrics(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> list[MetricsRow]:
        """Aggregated evaluation metrics of a federation, per model version and split.

        Parameters
        ----------
        fid : str
            The federation id.

        Returns
        -------
        list of MetricsRow
            One row per (version, split), averaged weighted by ``num_users``.
        """
        return self._get(_metrics_path(fid), ItemList[MetricsRow], timeout=timeout).items

    # --- lifecycle --------------------------------------------------------------------------

    def with_options(
        self,
        *,
        max_retries: int | NotGiven = NOT_GIVEN,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Self:
        """A copy of this client with other retry or timeout defaults.

        The copy shares this client's connection pool and weights cache; closing it is a
        no-op, close the original instead.

        Examples
        --------
        >>> client.with_options(max_retries=5).updates.submit(...)
        """
        client = type(self)(
            self.base_url,
            self._token,
            timeout=self.timeout if isinstance(timeout, NotGiven) else timeout,
            max_retries=self.max_retries if isinstance(max_retries, NotGiven) else max_retries,
            http_client=self._http,
        )
        client._sleep = self._sleep
        client._weights_cache = self._weights_cache
        return client

    @property
    def is_closed(self) -> bool:
        """Whether the underlying httpx client is closed."""
        return self._http.is_closed

    def close(self) -> None:
        """Close the underlying httpx client, if this client created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- requests (used by the resources) -----------------------------------------------------

    def _request(self, options: RequestOptions) -> httpx.Response:
        """Send one logical request, retrying transient failures; raise on status >= 400."""
        request = self._build_request(self._http, options)
        retries_taken = 0
        while True:
            retries_left = self.max_retries - retries_taken
            try:
                response = self._http.send(request)
            except httpx.RequestError as err:
                if retries_left > 0 and self._is_retryable_error(err):
                    delay = self._retry_delay(retries_taken, None)
                    self._log_retry(request, delay, retries_left - 1, type(err).__name__)
                    self._sleep(delay)
                    retries_taken += 1
                    continue
                raise self._transport_error(err, request) from err
            if response.status_code < 400:
                return response
            if retries_left > 0 and self._should_retry(response):
                delay = self._retry_delay(retries_taken, response)
                self._log_retry(request, delay, retries_left - 1, str(response.status_code))
                response.close()
                self._sleep(delay)
                retries_taken += 1
                continue
            raise _make_status_error(response)

    def _call(self, options: RequestOptions, type_: type[T]) -> T:
        return self._parse(self._request(options), type_)

    def _get(
        self,
        path: str,
        type_: type[T],
        *,
        params: dict[str, str | int | float] | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> T:
        return self._call(RequestOptions("GET", path, params=params, timeout=timeout), type_)

    def _post(
        self,
        path: str,
        type_: type[T],
        *,
        json: object | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> T:
        return self._call(RequestOptions("POST", path, json=json, timeout=timeout), type_)

    def _delete(
        self, path: str, type_: type[T], *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> T:
        return self._call(RequestOptions("DELETE", path, timeout=timeout), type_)


class AsyncClient(BaseClient):
    """An asyncio client of the fedrec coordinator; the twin of :class:`Client`.

    Every method of :class:`Client` and its resources exists here as a coroutine with
    the same parameters.

    Parameters
    ----------
    base_url : str, optional
        The coordinator's root URL (without ``/v1``). Defaults to ``FEDREC_URL``.
    token : str, optional
        The admin or participant bearer token. Defaults to ``FEDREC_TOKEN``.
    timeout : float, httpx.Timeout or None
        Default timeout of each request attempt; ``None`` waits forever.
    max_retries : int
        Retries after the first attempt on connection errors, timeouts, 408, 429 and 5xx.
    http_client : httpx.AsyncClient, optional
        An httpx client to send requests with; the SDK does not close it.
    transport : httpx.AsyncBaseTransport, optional
        A transport for the SDK's own httpx client. Mutually exclusive with ``http_client``.

    Examples
    --------
    >>> async with AsyncClient("http://localhost:8000", token) as client:
    ...     round_ = await client.rounds.current(fid)
    """

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        token: str | None = None,
        *,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        signing_key: str | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            token=token,
            timeout=timeout,
            max_retries=max_retries,
            signing_key=signing_key,
        )
        if http_client is not None and transport is not None:
            raise ValueError("pass either http_client or transport, not both")
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(f"http_client must be an httpx.AsyncClient, got {type(http_client)!r}")
        self._owns_http = http_client is None
        self._http: httpx.AsyncClient = http_client or httpx.AsyncClient(
            transport=transport, timeout=timeout, limits=_LIMITS
        )
        #: How the client waits between retries; tests replace it to skip the wait.
        self._sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    # --- resources --------------------------------------------------------------------------

    @cached_property
    def federations(self) -> AsyncFederations:
        """Create, list and read federations, and their item catalog."""
        return AsyncFederations(self)

    @cached_property
    def participants(self) -> AsyncParticipants:
        """Enrol, list, read and revoke participants."""
        return AsyncParticipants(self)

    @cached_property
    def admin_tokens(self) -> AsyncAdminTokens:
        """Create, list and revoke admin tokens (admin)."""
        return AsyncAdminTokens(self)

    @cached_property
    def rounds(self) -> AsyncRounds:
        """Read rounds, long-poll for the next one, and force aggregation."""
        return AsyncRounds(self)

    @cached_property
    def secagg(self) -> AsyncSecAgg:
        """The secure-aggregation phases of a round (async)."""
        return AsyncSecAgg(self)

    @cached_property
    def models(self) -> AsyncModels:
        """Model versions and their weights."""
        return AsyncModels(self)

    @cached_property
    def updates(self) -> AsyncUpdates:
        """Upload model updates."""
        return AsyncUpdates(self)

    @cached_property
    def evaluations(self) -> AsyncEvaluations:
        """Report local evaluation metrics."""
        return AsyncEvaluations(self)

    @cached_property
    def deployment(self) -> AsyncDeployments:
        """Read, promote and roll back the deployed model version."""
        return AsyncDeployments(self)

    async def health(self, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> Health:
        """Check that the coordinator is up (``GET /healthz``); see :meth:`Client.health`."""
        return await self._get("/healthz", Health, timeout=timeout)

    async def metrics(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> list[MetricsRow]:
        """Aggregated evaluation metrics per version and split; see :meth:`Client.metrics`."""
        return (await self._get(_metrics_path(fid), ItemList[MetricsRow], timeout=timeout)).items

    # --- lifecycle --------------------------------------------------------------------------

    def with_options(
        self,
        *,
        max_retries: int | NotGiven = NOT_GIVEN,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Self:
        """A copy of this client with other retry or timeout defaults.

        The copy shares this client's connection pool and weights cache; closing it is a
        no-op, close the original instead.
        """
        client = type(self)(
            self.base_url,
            self._token,
            timeout=self.timeout if isinstance(timeout, NotGiven) else timeout,
            max_retries=self.max_retries if isinstance(max_retries, NotGiven) else max_retries,
            http_client=self._http,
        )
        client._sleep = self._sleep
        client._weights_cache = self._weights_cache
        return client

    @property
    def is_closed(self) -> bool:
        """Whether the underlying httpx client is closed."""
        return self._http.is_closed

    async def aclose(self) -> None:
        """Close the underlying httpx client, if this client created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- requests (used by the resources) -----------------------------------------------------

    async def _request(self, options: RequestOptions) -> httpx.Response:
        """Send one logical request, retrying transient failures; raise on status >= 400."""
        request = self._build_request(self._http, options)
        retries_taken = 0
        while True:
            retries_left = self.max_retries - retries_taken
            try:
                response = await self._http.send(request)
            except httpx.RequestError as err:
                if retries_left > 0 and self._is_retryable_error(err):
                    delay = self._retry_delay(retries_taken, None)
                    self._log_retry(request, delay, retries_left - 1, type(err).__name__)
                    await self._sleep(delay)
                    retries_taken += 1
                    continue
                raise self._transport_error(err, request) from err
            if response.status_code < 400:
                return response
            if retries_left > 0 and self._should_retry(response):
                delay = self._retry_delay(retries_taken, response)
                self._log_retry(request, delay, retries_left - 1, str(response.status_code))
                await response.aclose()
                await self._sleep(delay)
                retries_taken += 1
                continue
            raise _make_status_error(response)

    async def _call(self, options: RequestOptions, type_: type[T]) -> T:
        return self._parse(await self._request(options), type_)

    async def _get(
        self,
        path: str,
        type_: type[T],
        *,
        params: dict[str, str | int | float] | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> T:
        options = RequestOptions("GET", path, params=params, timeout=timeout)
        return await self._call(options, type_)

    async def _post(
        self,
        path: str,
        type_: type[T],
        *,
        json: object | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> T:
        return await self._call(RequestOptions("POST", path, json=json, timeout=timeout), type_)

    async def _delete(
        self, path: str, type_: type[T], *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> T:
        return await self._call(RequestOptions("DELETE", path, timeout=timeout), type_)
