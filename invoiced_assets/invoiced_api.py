"""The Invoiced REST API as a Dagster resource.

`InvoicedResource` is the configuration users see (in code, the UI and Dagster+); it hands out an
`InvoicedClient`, a plain Python object that does the HTTP work and can be used without Dagster:

- HTTP Basic auth with the API key as user name (the key only ever travels in that header),
- a `requests.Session` per thread with a mounted urllib3 `Retry` for 429/5xx and dropped
  connections, honouring `Retry-After`, exponential backoff with jitter,
- one more, small retry loop for what urllib3 cannot see: bodies that break off or are not JSON,
- `Link`-header pagination (`LinkHeaderPaginator`), pages of one listing strictly in order,
- a process-wide cap on requests in flight (the service allows 20 per key),
- typed errors (`api_errors`) whose messages say what to fix and never contain the key.
"""

import ipaddress
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import dagster as dg
import orjson
import requests
from pydantic import Field, PrivateAttr, field_validator
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from invoiced_assets.api_errors import (
    InvoicedAPIError,
    InvoicedAuthenticationError,
    InvoicedConfigurationError,
    InvoicedConnectionError,
    InvoicedCustomerNotFoundError,
    InvoicedError,
    InvoicedInvalidRequestError,
    InvoicedNotFoundError,
    InvoicedPermissionError,
    InvoicedRateLimitError,
)
from invoiced_assets.catalogue import get_object

ENVIRONMENT_URLS: Mapping[str, str] = {
    "production": "https://api.invoiced.com",
    "sandbox": "https://api.sandbox.invoiced.com",
}
SERVICE_MAX_IN_FLIGHT = 20  # the service answers 429 past 20 concurrent requests per key
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# The service's 404 for a per-customer listing whose customer does not exist (its other 404s,
# such as "Request was not recognized", mean the request itself is wrong).
CUSTOMER_NOT_FOUND = "Customer was not found"
USER_AGENT = "invoiced_assets (+https://github.com/invoiced-assets/invoiced_assets)"

_API_KEY_HELP = (
    "Check INVOICED_API_KEY, and that INVOICED_ENVIRONMENT matches the key (sandbox keys only work"
    " with environment 'sandbox'). An account administrator can create a key in Invoiced under"
    " Settings → Developers → API Keys."
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_base_url(url: str) -> str:
    """Return `url` without a trailing slash, or raise naming what is wrong with it.

    https is required, except for loopback hosts (the bundled emulator, a local proxy), so a key
    can never cross a network in clear text. Credentials or a query in the URL are refused: they
    would end up in logs.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvoicedConfigurationError(
            f"INVOICED_BASE_URL must be an absolute http(s) URL such as"
            f" https://api.invoiced.com, got {url!r}."
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise InvoicedConfigurationError(
            f"INVOICED_BASE_URL must use https for host {parts.hostname!r}: plain http is only"
            " allowed for loopback hosts (127.0.0.1, ::1, localhost)."
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvoicedConfigurationError(
            "INVOICED_BASE_URL must not contain credentials, a query or a fragment; the API key"
            " is given in INVOICED_API_KEY."
        )
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: data, so tests can make every wait tiny."""

    max_retries: int = 6
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    # Sleep at most this long for one Retry-After; a longer one is clamped.
    retry_after_max_seconds: float = 120.0

    def urllib3_retry(self) -> Retry:
        """The policy as urllib3's `Retry`, which `InvoicedClient.get` drives: what is retried
        (connection failures, broken or unreadable bodies, 429 and 5xx), and how long to wait
        (its backoff, or the answer's `Retry-After`)."""
        return _ClampedRetry(
            total=self.max_retries,
            connect=self.max_retries,
            read=self.max_retries,
            status=self.max_retries,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRYABLE_STATUSES,
            backoff_factor=self.backoff_initial_seconds,
            backoff_max=self.backoff_max_seconds,
            backoff_jitter=self.backoff_initial_seconds,
            respect_retry_after_header=True,
            raise_on_status=False,
            retry_after_max_seconds=self.retry_after_max_seconds,
        )


class _ClampedRetry(Retry):
    """urllib3's Retry, with a bound on how long one `Retry-After` may make us sleep."""

    def __init__(self, *args: Any, retry_after_max_seconds: float = 120.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_max_seconds = retry_after_max_seconds

    def new(self, **kw: Any) -> "_ClampedRetry":
        new_retry = super().new(**kw)
        new_retry.retry_after_max_seconds = self.retry_after_max_seconds
        return new_retry

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            seconds = float(retry_after)  # the base class accepts only whole seconds or a date
        except ValueError:
            seconds = super().parse_retry_after(retry_after)
        return max(0.0, min(seconds, self.retry_after_max_seconds))


@dataclass(frozen=True)
class ClientSettings:
    """Validated, resolved settings of one client."""

    api_key: str = field(repr=False)
    base_url: str
    page_size: int = 100
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    max_in_flight: int = 8
    retry: RetryPolicy = RetryPolicy()


# --------------------------------------------------------------------------------------------
# Pagination and listing statistics
# --------------------------------------------------------------------------------------------


class LinkHeaderPaginator:
    """Follow the `next` URL of the RFC 5988 `Link` header; stop on no `next` or an empty page.

    The service's `X-Total-Count` is computed on page 1 and cached, so its `next` link can stop a
    page early or run one late when rows change during a walk; an empty page also ends it.
    """

    def next_url(self, response: requests.Response, page: list[Any]) -> str | None:
        if not page:
            return None
        return response.links.get("next", {}).get("url")


@dataclass
class ListingStats:
    """What one walk of a listing did, for logs and materialization metadata."""

    listing: str
    pages: int = 0
    records: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 answers seen, retried or not
    bytes_received: int = 0
    total_count: int | None = None  # X-Total-Count on page 1
    total_count_after: int | None = None  # X-Total-Count asked again after the last page
    elapsed_seconds: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        return {
            "api_pages": self.pages,
            "api_records": self.records,
            "api_requests": self.requests,
            "api_retries": self.retries,
            "api_429s": self.rate_limited,
            "api_bytes_received": self.bytes_received,
            "api_total_count": self.total_count,
            "api_records_per_second": round(self.records / self.elapsed_seconds)
            if self.elapsed_seconds
            else None,
            "api_seconds": round(self.elapsed_seconds, 3),
        }


@dataclass
class _Fetched:
    """One successful GET: the parsed body and what it cost."""

    response: requests.Response
    body: Any
    attempts: int
    rate_limited: int


_IN_FLIGHT_LOCK = threading.Lock()
_IN_FLIGHT: dict[tuple[str, int], threading.BoundedSemaphore] = {}


def _in_flight_semaphore(base_url: str, limit: int) -> threading.BoundedSemaphore:
    """One semaphore per API host and limit, shared by every client in the process."""
    with _IN_FLIGHT_LOCK:
        return _IN_FLIGHT.setdefault((base_url, limit), threading.BoundedSemaphore(limit))


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class InvoicedClient:
    """Reads the Invoiced API. Thread-safe: each thread gets its own `requests.Session`."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.paginator = LinkHeaderPaginator()
        self._local = threading.local()
        self._in_flight = _in_flight_semaphore(settings.base_url, settings.max_in_flight)
        self._base = urlsplit(settings.base_url)
        # When each request on the network started: tells a read waiting on the API from a
        # CPU-bound one (see `waiting_seconds`).
        self._started: dict[int, float] = {}
        self._tokens = itertools.count()
        # How the client waits between attempts: tests replace it (a fake clock, an event).
        self.sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:
        return f"InvoicedClient(base_url={self.settings.base_url!r})"

    # -- HTTP ---------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = (self.settings.api_key, "")
            session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
            # No retries down there: `get` drives the one policy, waiting outside the slot.
            adapter = HTTPAdapter(
                max_retries=0,
                pool_connections=1,
                pool_maxsize=max(2, self.settings.max_in_flight),
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            # Proxies and CA bundle from the environment, read once: requests reads them again
            # for every request otherwise (measured: 0.13 of its 0.75 ms of CPU per request).
            # Every request goes to the base URL's host, so the answer is the same for all.
            environment = session.merge_environment_settings(
                self.settings.base_url, {}, None, None, None
            )
            session.proxies.update(environment["proxies"])
            session.verify = environment["verify"]
            session.trust_env = False
            self._local.session = session
        return session

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            parts = urlsplit(path_or_url)
            # The key goes with every request: never follow a link to another host.
            if (parts.scheme, parts.netloc) != (self._base.scheme, self._base.netloc):
                raise InvoicedAPIError(
                    f"The API sent a pagination link to another host ({parts.netloc}); refusing"
                    " to send the API key there.",
                    path=parts.path,
                )
            return path_or_url
        return self.settings.base_url + path_or_url

    def get(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> _Fetched:
        """GET and parse JSON, retrying transient failures; raise a typed error otherwise.

        The one retry policy is the settings' `RetryPolicy` (urllib3's `Retry`, driven here):
        it decides what is retried and how long to wait. An attempt holds an in-flight slot
        only while it is on the network; the waits between attempts hold none, so a
        rate-limited API neither looks slow (`waiting_seconds`) nor keeps slots from others.
        """
        url = self._url(path_or_url)
        path = urlsplit(url).path
        retry = self.settings.retry.urllib3_retry()
        attempts = rate_limited = 0
        while True:
            attempts += 1
            try:
                response, content = self._attempt(url, params)
            except requests.RequestException as exc:
                failure = ProtocolError(_describe_connection_error(exc))
                retry = self._retry_or_raise(retry, url, failure, attempts)
                continue
            status = response.status_code
            rate_limited += status == 429
            if retry.is_retry("GET", status, "Retry-After" in response.headers):
                try:
                    retry = retry.increment("GET", url, response=response.raw)
                except MaxRetryError:
                    raise _error_for(response, path, attempts) from None
                wait = retry.get_retry_after(response.raw) or retry.get_backoff_time()
                self._wait(path, f"HTTP {status}", len(retry.history), wait)
                continue
            if status >= 400:
                raise _error_for(response, path, attempts)
            try:
                return _Fetched(response, orjson.loads(content), attempts, rate_limited)
            except ValueError:
                failure = ProtocolError("the body was not valid JSON")
                retry = self._retry_or_raise(retry, url, failure, attempts, response)

    def _attempt(self, url: str, params: Mapping[str, Any] | None) -> tuple[Any, bytes]:
        """One request, in flight from sending it to the end of its body."""
        token = next(self._tokens)
        with self._in_flight:
            self._started[token] = time.monotonic()
            try:
                response = self._session().get(
                    url,
                    params=params,
                    timeout=(
                        self.settings.connect_timeout_seconds,
                        self.settings.read_timeout_seconds,
                    ),
                )
                return response, response.content  # the body is read while counted in flight
            finally:
                del self._started[token]

    def _retry_or_raise(
        self,
        retry: Retry,
        url: str,
        failure: ProtocolError,
        attempts: int,
        response: Any = None,
    ) -> Retry:
        """The policy after a failed attempt (having waited its backoff), or the typed error
        once the policy is exhausted."""
        path = urlsplit(url).path
        try:
            retry = retry.increment("GET", url, error=failure)
        except MaxRetryError:
            if response is not None:
                raise InvoicedAPIError(
                    f"GET {path} answered HTTP {response.status_code} with a body that is not"
                    f" valid JSON, after {attempts} attempts. The service may be degraded; try"
                    " again later.",
                    path=path,
                    status=response.status_code,
                    attempts=attempts,
                ) from None
            raise InvoicedConnectionError(
                f"GET {path} failed after {attempts} attempts: {failure}. Check the network and"
                " INVOICED_BASE_URL / INVOICED_ENVIRONMENT.",
                path=path,
                attempts=attempts,
            ) from None
        self._wait(path, str(failure), len(retry.history), retry.get_backoff_time())
        return retry

    def _wait(self, path: str, reason: str, retry_number: int, seconds: float) -> None:
        logger.warning("GET %s: %s; retry %d in %.2fs", path, reason, retry_number, seconds)
        self.sleep(seconds)

    def waiting_seconds(self) -> float:
        """How long the oldest request on the network has been going (0.0 when there is none;
        waits between retries do not count)."""
        starts = list(self._started.values())  # one call in C: safe while other threads add
        return time.monotonic() - min(starts) if starts else 0.0

    # -- Listings -----------------------------------------------------------------------------

    def listing(
        self, endpoint: str, params: Mapping[str, Any] | None = None, *, sliced: bool = True
    ) -> "Listing":
        """A walk over every record of `endpoint` (e.g. "/invoices") with `params`.

        `sliced=False`: the service sends every record on every page (payment sources), so the
        walk stops after the first page, whatever its `Link` header says.
        """
        params = {"per_page": self.settings.page_size, **(params or {})}
        return Listing(self, endpoint, params, sliced=sliced)

    def object_listing(
        self,
        object_name: str,
        *,
        updated_after: int | None = None,
        start_date: int | None = None,
        end_date: int | None = None,
        filters: Mapping[str, Any] | None = None,
        sort: str | None = None,
        params: Mapping[str, Any] | None = None,
        customer: Any = None,
    ) -> "Listing":
        """A complete listing of a catalogue object, with the parameters its quirks need.

        `filters` become `filter[FIELD]=VALUE`; dates are UNIX seconds; `customer` is the
        customer whose records a per-customer listing (contacts, payment sources) walks.
        """
        obj = get_object(object_name)
        query: dict[str, Any] = dict(obj.list_params)
        if updated_after is not None:
            query["updated_after"] = int(updated_after)
        if start_date is not None:
            query["start_date"] = int(start_date)
        if end_date is not None:
            query["end_date"] = int(end_date)
        if sort:
            query["sort"] = sort
        for name, value in (filters or {}).items():
            query[f"filter[{name}]"] = value
        query.update(params or {})
        return self.listing(obj.list_endpoint(customer), query, sliced=obj.sliced_pages)

    def get_record(self, object_name: str, record_id: int | str) -> dict[str, Any]:
        """One record by id (`GET /<endpoint>/<id>`)."""
        obj = get_object(object_name)
        return self.get(f"{obj.endpoint}/{record_id}", dict(obj.list_params)).body

    def check_connection(self) -> "ConnectionCheck":
        """One cheap authenticated call: passes, or raises an error saying what to fix."""
        started = time.monotonic()
        fetched = self.get("/customers", {"per_page": 1})
        total = fetched.response.headers.get("X-Total-Count")
        return ConnectionCheck(
            base_url=self.settings.base_url,
            customers=int(total) if total and total.isdigit() else None,
            seconds=time.monotonic() - started,
        )


@dataclass(frozen=True)
class ConnectionCheck:
    """The result of a passed connection check."""

    base_url: str
    customers: int | None
    seconds: float

    def __str__(self) -> str:
        count = "an unknown number of" if self.customers is None else f"{self.customers}"
        return (
            f"Connected to {self.base_url}: the API key works and the account has {count}"
            f" customers ({self.seconds:.2f}s)."
        )


class Listing:
    """Every page of one listing, fetched strictly in order by following `next` links.

    Iterate for pages (lists of records); `stats` is filled in as the walk goes.
    """

    def __init__(
        self,
        client: InvoicedClient,
        endpoint: str,
        params: Mapping[str, Any],
        *,
        sliced: bool = True,
    ) -> None:
        self._client = client
        self.endpoint = endpoint
        self.params = dict(params)
        self.sliced = sliced
        self.stats = ListingStats(listing=endpoint)

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        started = time.monotonic()
        url: str | None = self.endpoint
        params: Mapping[str, Any] | None = self.params
        try:
            while url:
                fetched = self._client.get(url, params)
                page = fetched.body
                if not isinstance(page, list):
                    raise InvoicedAPIError(
                        f"GET {self.endpoint} answered a {type(page).__name__}, not a list of"
                        " records; is INVOICED_BASE_URL the Invoiced API?",
                        path=self.endpoint,
                    )
                self._count(fetched, page)
                if self.stats.pages == 1:
                    total = fetched.response.headers.get("X-Total-Count", "")
                    self.stats.total_count = int(total) if total.isdigit() else None
                url = self._client.paginator.next_url(fetched.response, page)
                if not self.sliced:
                    url = None  # later pages would only repeat this one
                params = None  # the next link carries every parameter
                if page:
                    yield page
        finally:
            self.stats.elapsed_seconds = time.monotonic() - started

    def _count(self, fetched: _Fetched, page: list[Any]) -> None:
        stats = self.stats
        stats.pages += 1
        stats.records += len(page)
        stats.requests += fetched.attempts
        stats.retries += fetched.attempts - 1
        stats.rate_limited += fetched.rate_limited
        stats.bytes_received += len(fetched.response.content)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, page after page."""
        for page in self:
            yield from page

    def count_now(self) -> int | None:
        """The listing's X-Total-Count as of now (one request for one record)."""
        fetched = self._client.get(self.endpoint, {**self.params, "per_page": 1})
        self.stats.requests += fetched.attempts
        self.stats.retries += fetched.attempts - 1
        self.stats.rate_limited += fetched.rate_limited
        total = fetched.response.headers.get("X-Total-Count", "")
        self.stats.total_count_after = int(total) if total.isdigit() else None
        return self.stats.total_count_after


# --------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------


def _describe_connection_error(exc: Exception) -> str:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.Timeout) or isinstance(reason, TimeoutError | ReadTimeoutError):
        return "the request timed out"
    return f"could not connect or the connection dropped ({type(reason or exc).__name__})"


def _api_message(response: requests.Response) -> tuple[str | None, str | None]:
    """The API's own `message` and `param`, when the body is the usual JSON error object."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    return body.get("message"), body.get("param")


def _error_for(response: requests.Response, path: str, attempts: int) -> InvoicedError:
    status = response.status_code
    api_message, param = _api_message(response)
    said = f": {api_message}" if api_message else ""
    common = {
        "path": path,
        "status": status,
        "attempts": attempts,
        "api_message": api_message,
        "param": param,
    }
    if status == 401:
        return InvoicedAuthenticationError(
            f"Invoiced rejected the API key (HTTP 401 on GET {path}{said}). {_API_KEY_HELP}",
            **common,
        )
    if status == 403:
        return InvoicedPermissionError(
            f"The API key may not read {path} (HTTP 403{said}). Use a key of a user with access"
            " to this data.",
            **common,
        )
    if status == 404:
        if (api_message or "").startswith(CUSTOMER_NOT_FOUND):
            return InvoicedCustomerNotFoundError(f"GET {path}: HTTP 404{said}.", **common)
        return InvoicedNotFoundError(
            f"GET {path} was not found (HTTP 404{said}). If the record should exist, or the"
            " service does not know the path (`Request was not recognized`), check"
            " INVOICED_BASE_URL (the API's host, e.g. https://api.invoiced.com, with no path)"
            " and INVOICED_ENVIRONMENT.",
            **common,
        )
    if status == 429:
        return InvoicedRateLimitError(
            f"GET {path} was still rate limited (HTTP 429{said}) after {attempts} attempts."
            " Lower max_in_flight, or run when fewer other integrations use this key.",
            **common,
        )
    if status >= 500:
        kind = "" if api_message else " (a non-JSON error page)"
        return InvoicedAPIError(
            f"GET {path} failed with HTTP {status}{kind}{said} after {attempts} attempts. The"
            " service may be degraded; try again later.",
            **common,
        )
    param_hint = f" (parameter {param!r})" if param else ""
    return InvoicedInvalidRequestError(
        f"Invoiced refused GET {path}{param_hint} with HTTP {status}{said}.", **common
    )


# --------------------------------------------------------------------------------------------
# The Dagster resource
# --------------------------------------------------------------------------------------------


class InvoicedResource(dg.ConfigurableResource):
    """Read access to one Invoiced account, shared by every Invoiced asset.

    Set the key with `INVOICED_API_KEY`; it never appears in logs, errors or the UI.
    """

    api_key: str = Field(
        repr=False,
        description="Invoiced API key (Settings → Developers → API Keys). Secret: use an EnvVar.",
    )
    environment: Literal["production", "sandbox"] = Field(
        default="production",
        description="Which Invoiced: production (api.invoiced.com) or sandbox.",
    )
    base_url: str | None = Field(
        default=None,
        description=(
            "Overrides the environment's URL (the bundled emulator, a proxy). https only, except"
            " for loopback hosts."
        ),
    )
    page_size: int = Field(default=100, ge=1, le=100, description="Records per page (1-100).")
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    read_timeout_seconds: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=20, description="Retries per request.")
    backoff_initial_seconds: float = Field(default=0.5, ge=0)
    backoff_max_seconds: float = Field(default=30.0, ge=0)
    retry_after_max_seconds: float = Field(
        default=120.0, ge=0, description="The longest a Retry-After header may make a request wait."
    )
    max_in_flight: int = Field(
        default=8,
        ge=1,
        le=SERVICE_MAX_IN_FLIGHT,
        description=(
            "Most requests in flight at once, shared by everything in the process. The service"
            " allows 20 per key, shared with your other integrations."
        ),
    )

    _client: InvoicedClient | None = PrivateAttr(default=None)
    _client_lock: ClassVar[threading.Lock] = threading.Lock()

    @field_validator("base_url", mode="before")
    @classmethod
    def _check_base_url(cls, value: Any) -> Any:
        # EnvVar values are checked once Dagster has resolved them (this runs again then).
        if value is None or isinstance(value, dg.EnvVar) or value == "":
            return value or None
        return validate_base_url(value)

    def settings(self) -> ClientSettings:
        if not self.api_key or not self.api_key.strip():
            raise InvoicedConfigurationError(
                f"The Invoiced API key is empty. Set INVOICED_API_KEY. {_API_KEY_HELP}"
            )
        return ClientSettings(
            api_key=self.api_key.strip(),
            base_url=self.base_url or ENVIRONMENT_URLS[self.environment],
            page_size=self.page_size,
            connect_timeout_seconds=self.connect_timeout_seconds,
            read_timeout_seconds=self.read_timeout_seconds,
            max_in_flight=self.max_in_flight,
            retry=RetryPolicy(
                max_retries=self.max_retries,
                backoff_initial_seconds=self.backoff_initial_seconds,
                backoff_max_seconds=self.backoff_max_seconds,
                retry_after_max_seconds=self.retry_after_max_seconds,
            ),
        )

    def get_client(self) -> InvoicedClient:
        """The client for these settings, built once."""
        with self._client_lock:
            if self._client is None:
                self._client = InvoicedClient(self.settings())
            return self._client

    def check_connection(self) -> ConnectionCheck:
        """Test & continue: one authenticated call that passes or says what to fix."""
        return self.get_client().check_connection()
