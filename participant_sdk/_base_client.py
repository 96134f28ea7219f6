"""What :class:`Client` and :class:`AsyncClient` share: config, URLs, headers, retries, parsing.

Only the code that performs I/O (sending and sleeping) differs between the two
clients; everything that decides *what* to send, *whether* to retry and *how long*
to wait lives here, once.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import math
import os
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from ._constants import (
    ENV_TOKEN,
    ENV_URL,
    INITIAL_RETRY_DELAY,
    LONG_POLL_READ_MARGIN,
    MAX_LONG_POLL_WAIT,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
    NOT_GIVEN,
    RETRY_AFTER_JITTER,
    USER_AGENT,
    WEIGHTS_CACHE_SIZE,
    NotGiven,
)
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    FedrecError,
)

__all__ = [
    "BaseClient",
    "RequestOptions",
    "TimeoutTypes",
    "path_segment",
    "retry_after_seconds",
]

log = logging.getLogger("participant_sdk")

#: What ``timeout=`` accepts: seconds for every phase, a full :class:`httpx.Timeout`,
#: or ``None`` for no timeout.
TimeoutTypes: TypeAlias = float | httpx.Timeout | None

T = TypeVar("T")

# 408 Request Timeout, 429 Too Many Requests, and every 5xx (502/503/504 above all) are
# transient. 409 and the other 4xx are answers about the request itself: retrying
# cannot change them.
_RETRYABLE_STATUSES = frozenset({408, 429})


def path_segment(value: object) -> str:
    """Quote ``value`` as one URL path segment, so an id can never add path components."""
    return quote(str(value), safe="")


@dataclass
class RequestOptions:
    """One logical API call; retried attempts re-send the same request."""

    method: str
    path: str
    params: Mapping[str, str | int | float] | None = None
    json: object | None = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: TimeoutTypes | NotGiven = NOT_GIVEN


@dataclass
class CachedWeights:
    """The last weights bytes served for one ``(fid, version)`` and their ``ETag``."""

    etag: str
    data: bytes
    # the transport encoding of ``data`` (the X-Model-Encoding it was served with)
    encoding: str = "float32"


class WeightsCache:
    """A small thread-safe LRU of weights payloads keyed by ``(fid, version)``."""

    def __init__(self, maxsize: int = WEIGHTS_CACHE_SIZE) -> None:
        self._maxsize = maxsize
        self._entries: OrderedDict[tuple[str, str], CachedWeights] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> CachedWeights | None:
        """The cached entry for ``key`` (marking it recently used), or ``None``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[str, str], entry: CachedWeights) -> None:
        """Store ``entry``, evicting the least recently used beyond ``maxsize``."""
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)

    def etags(self, fid: str) -> list[str]:
        """The ETags of the cached bytes of federation ``fid`` (any version, encoding)."""
        with self._lock:
            return [entry.etag for key, entry in self._entries.items() if key[0] == fid]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _resolve(value: str | None, env: str, what: str) -> str:
    resolved = value if value is not None else os.environ.get(env)
    if not resolved:
        raise FedrecError(f"no coordinator {what}: pass {what}= or set the {env} variable")
    return resolved


def _parse_retry_after(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or ``None``."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())  # a past date means now
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def retry_after_seconds(response: httpx.Response) -> float | None:
    """How long to wait before retrying after ``response``: its ``Retry-After`` (capped at
    ``MAX_RETRY_AFTER``) plus up to ``RETRY_AFTER_JITTER`` of it more, or ``None`` when it
    names no valid wait. Used for the client's own retries and by
    :meth:`FederatedRecommender.run` once they are spent."""
    retry_after = _parse_retry_after(response.headers)
    if retry_after is None:
        return None
    jitter = 1.0 + RETRY_AFTER_JITTER * random.random()  # nosec B311 # retry jitter, not a secret
    return min(retry_after, MAX_RETRY_AFTER) * jitter


class BaseClient:
    """Configuration and request logic shared by :class:`Client` and :class:`AsyncClient`.

    Parameters
    ----------
    base_url : str, optional
        The coordinator's root URL, e.g. ``"http://localhost:8000"`` (without ``/v1``).
        Defaults to the ``FEDREC_URL`` environment variable.
    token : str, optional
        A bearer token (admin or participant). Defaults to ``FEDREC_TOKEN``.
    timeout : float, httpx.Timeout or None
        Default timeout of every request; ``None`` disables it.
    max_retries : int
        Retries after the first attempt of a request that failed transiently.
    signing_key : str, optional
        The coordinator's Ed25519 public key (base64, from ``GET /v1/signing-key`` or
        the operator). Every downloaded model must carry a manifest signed by it.
        Without one, the client fetches the key on its first download and pins it for
        its lifetime (read it back from :attr:`signing_key` to pin it across runs).
    """

    def __init__(
        self,
        *,
        base_url: str | httpx.URL | None,
        token: str | None,
        timeout: TimeoutTypes,
        max_retries: int,
        signing_key: str | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        url = _resolve(None if base_url is None else str(base_url), ENV_URL, "base_url")
        self.base_url: str = url.rstrip("/")
        self._token: str = _resolve(token, ENV_TOKEN, "token")
        self.timeout: TimeoutTypes = timeout
        self.max_retries: int = max_retries
        self._weights_cache = WeightsCache()
        #: The pinned public key (base64) every downloaded model's signature must verify
        #: under; set by the constructor or on the first download, then never replaced.
        self.signing_key: str | None = signing_key
        #: The longest long-poll ``wait`` to ask for whatever the coordinator advertises:
        #: set it below the read timeout of a proxy between you and the coordinator
        #: (nginx: 60 s) so that it never cuts a held poll. ``None``: the coordinator's.
        self.max_long_poll_wait: int | None = None
        # what the coordinator advertised (Round.max_wait_seconds); 60 s until it did
        self._advertised_max_wait: int = MAX_LONG_POLL_WAIT
        # its maximum for polls with in_cohort=true (Round.max_cohort_wait_seconds)
        self._advertised_max_cohort_wait: int = MAX_LONG_POLL_WAIT

    def __repr__(self) -> str:
        # Never the token: reprs end up in logs.
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # --- building requests ------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _default_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, options: RequestOptions
    ) -> httpx.Request:
        headers = self._default_headers()
        headers.update(options.headers)
        if options.method != "GET" and "Idempotency-Key" not in headers:
            # Generated once per logical request; every retry re-sends this very request,
            # so the coordinator can recognise a repeat and answer with the first result.
            headers["Idempotency-Key"] = str(uuid.uuid4())
        timeout = self.timeout if isinstance(options.timeout, NotGiven) else options.timeout
        return http.build_request(
            options.method,
            _parsed_url(self._url(options.path)),
            params=dict(options.params) if options.params else None,
            json=options.json,
            content=options.content,
            headers=headers,
            timeout=timeout,
        )

    def _long_poll_timeout(
        self, wait: float | None, timeout: TimeoutTypes | NotGiven
    ) -> TimeoutTypes:
        """The timeout of a long-poll: its read timeout must outlast the server's ``wait``."""
        base = self.timeout if isinstance(timeout, NotGiven) else timeout
        if wait is None or base is None:
            return base
        base = base if isinstance(base, httpx.Timeout) else httpx.Timeout(base)
        read = base.read
        if read is not None:
            read = max(read, float(wait) + LONG_POLL_READ_MARGIN)
        return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)

    def _wait_param(self, wait: float, *, in_cohort: bool = False) -> int:
        """The ``?wait=`` value: whole seconds in ``[0, the longest wait]``: the
        coordinator's advertised maximum (60 s until one was seen; for a poll with
        ``in_cohort``, its longer maximum for those), at most ``max_long_poll_wait``."""
        longest = self._advertised_max_cohort_wait if in_cohort else self._advertised_max_wait
        if self.max_long_poll_wait is not None:
            longest = min(longest, self.max_long_poll_wait)
        return int(max(0.0, min(float(longest), wait)))

    def _learn_max_wait(self, advertised: int | None, cohort: int | None = None) -> None:
        """Remember the coordinator's advertised long-poll maxima (``None``: 60 s; for
        ``in_cohort`` polls, the plain maximum where it advertises none of its own)."""
        self._advertised_max_wait = max(1, advertised or MAX_LONG_POLL_WAIT)
        self._advertised_max_cohort_wait = max(self._advertised_max_wait, cohort or 0)

    # --- retries ----------------------------------------------------------------------------

    @staticmethod
    def _should_retry(response: httpx.Response) -> bool:
        status = response.status_code
        return status in _RETRYABLE_STATUSES or status >= 500

    @staticmethod
    def _retry_delay(retries_taken: int, response: httpx.Response | None) -> float:
        """Seconds to wait before retry number ``retries_taken + 1``.

        A server's ``Retry-After`` wins (capped at ``MAX_RETRY_AFTER``), plus up to
        ``RETRY_AFTER_JITTER`` of it more (never less: the server asked for at least that);
        otherwise exponential backoff from ``INITIAL_RETRY_DELAY`` up to ``MAX_RETRY_DELAY``,
        minus up to 25 % jitter. Either way many participants do not retry in lockstep.
        """
        if response is not None:
            retry_after = retry_after_seconds(response)
            if retry_after is not None:
                return retry_after
        delay = min(INITIAL_RETRY_DELAY * 2.0**retries_taken, MAX_RETRY_DELAY)
        return delay * (1.0 - 0.25 * random.random())  # nosec B311 # retry jitter, not a secret

    def _transport_error(self, err: httpx.RequestError, request: httpx.Request) -> APIError:
        if isinstance(err, httpx.TimeoutException):
            return APITimeoutError(request, f"Request timed out: {request.method} {request.url}")
        return APIConnectionError(
            request, f"Connection error: {request.method} {request.url}: {err!r}"
        )

    @staticmethod
    def _is_retryable_error(err: httpx.RequestError) -> bool:
        # Transport errors (connect, read, write, pool, timeouts, protocol) are transient;
        # decoding errors or too many redirects are not.
        return isinstance(err, httpx.TransportError)

    @staticmethod
    def _log_retry(request: httpx.Request, delay: float, retries_left: int, reason: str) -> None:
        log.info(
            "retrying %s %s in %.2fs after %s (%d retries left)",
            request.method,
            request.url,
            delay,
            reason,
            retries_left,
        )

    # --- parsing ----------------------------------------------------------------------------

    @staticmethod
    def _parse(response: httpx.Response, type_: type[T]) -> T:
        """Validate a JSON body against ``type_``; a mismatch is the server breaking contract."""
        try:
            data = response.json()
        except ValueError as err:
            raise APIResponseValidationError(
                f"{response.status_code} response to {response.request.method} "
                f"{response.request.url} is not JSON",
                response=response,
                body=response.text,
            ) from err
        try:
            return _adapter(type_).validate_python(data)
        except ValidationError as err:
            raise APIResponseValidationError(
                f"{response.status_code} response to {response.request.method} "
                f"{response.request.url} does not match {getattr(type_, '__name__', type_)}: "
                f"{err}",
                response=response,
                body=data,
            ) from err


# httpx parses a str URL twice per request (~30 us each, character by character); a
# participant asks the same few URLs every round, as do all the participants of one
# process, and an httpx.URL is immutable, so the parsed ones are shared.
@functools.lru_cache(maxsize=1024)
def _parsed_url(url: str) -> httpx.URL:
    return httpx.URL(url)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(type_: type[T]) -> TypeAdapter[T]:
    adapter = _ADAPTERS.get(type_)
    if adapter is None:
        adapter = _ADAPTERS[type_] = TypeAdapter(type_)
    return adapter
