"""The Invoiced REST API client: a plain Python object that does the HTTP work, usable without
Dagster (`InvoicedResource`, in `api.resource`, hands one out).

- HTTP Basic auth with the API key as user name (the key only ever travels in that header);
- a `requests.Session` per thread, with `(connect, read)` timeouts;
- the one retry policy (`api.retry`), driven here: waits between attempts hold no in-flight slot;
- `Link`-header pagination (`api.listing`), pages of one listing strictly in order;
- a process-wide cap on requests in flight (the service allows 20 per key), lowered while the
  service answers 429 (`api.in_flight`);
- typed errors (`api.errors`) whose messages say what to fix and never contain the key.
"""

import ipaddress
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ProtocolError
from urllib3.util.retry import Retry

from invoiced_assets.api.errors import (
    InvoicedAPIError,
    InvoicedConfigurationError,
    describe_connection_error,
    error_for,
    failure_error,
)
from invoiced_assets.api.in_flight import Rank, shared_limit
from invoiced_assets.api.listing import LinkHeaderPaginator, Listing
from invoiced_assets.api.retry import RetryPolicy
from invoiced_assets.catalogue import CUSTOMERS, InvoicedObject, get_object

ENVIRONMENT_URLS: Mapping[str, str] = {
    "production": "https://api.invoiced.com",
    "sandbox": "https://api.sandbox.invoiced.com",
}
SERVICE_MAX_IN_FLIGHT = 20  # the service answers 429 past 20 concurrent requests per key
# Our ceiling: leaves the key's other integrations 4 at our busiest (see `api.in_flight`).
DEFAULT_MAX_IN_FLIGHT = 16
USER_AGENT = "invoiced_assets (+https://github.com/invoiced-assets/invoiced_assets)"

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
class ClientSettings:
    """Validated, resolved settings of one client."""

    api_key: str = field(repr=False)
    base_url: str
    page_size: int = 100
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class Fetched:
    """One successful GET: the parsed body and what it cost."""

    response: requests.Response
    body: Any
    attempts: int
    rate_limited: int


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class InvoicedClient:
    """Reads the Invoiced API. Thread-safe: each thread gets its own `requests.Session`."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.paginator = LinkHeaderPaginator()
        self._local = threading.local()
        self.in_flight = shared_limit(settings.base_url, settings.max_in_flight)
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

    def get(
        self,
        path_or_url: str,
        params: Mapping[str, Any] | None = None,
        *,
        rank: Rank = Rank.WALK,
    ) -> Fetched:
        """GET and parse JSON, retrying transient failures; raise a typed error otherwise.

        The one retry policy is the settings' `RetryPolicy` (urllib3's `Retry`, driven here):
        it decides what is retried and how long to wait. An attempt holds an in-flight slot
        only while it is on the network; the waits between attempts hold none, so a
        rate-limited API neither looks slow (`waiting_seconds`) nor keeps slots from others.
        `rank`: which waiting request a freed slot goes to first (`api.in_flight.Rank`).
        """
        url = self._url(path_or_url)
        path = urlsplit(url).path
        retry = self.settings.retry.urllib3_retry()
        attempts = rate_limited = 0
        while True:
            attempts += 1
            try:
                response, content = self._attempt(url, params, rank)
            except requests.RequestException as exc:
                failure = ProtocolError(describe_connection_error(exc))
                retry = self._retry_or_raise(retry, url, failure, attempts)
                continue
            status = response.status_code
            rate_limited += status == 429
            if retry.is_retry("GET", status, "Retry-After" in response.headers):
                try:
                    retry = retry.increment("GET", url, response=response.raw)
                except MaxRetryError:
                    raise error_for(response, path, attempts) from None
                wait = retry.get_retry_after(response.raw) or retry.get_backoff_time()
                self._wait(path, f"HTTP {status}", len(retry.history), wait)
                continue
            if status >= 400:
                raise error_for(response, path, attempts)
            try:
                return Fetched(response, orjson.loads(content), attempts, rate_limited)
            except ValueError:
                failure = ProtocolError("the body was not valid JSON")
                retry = self._retry_or_raise(retry, url, failure, attempts, response)

    def _attempt(self, url: str, params: Mapping[str, Any] | None, rank: Rank) -> tuple[Any, bytes]:
        """One request, in flight from sending it to the end of its body."""
        token = next(self._tokens)
        with self.in_flight.slot(rank) as outcome:
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
                outcome.rate_limited = response.status_code == 429
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
            raise failure_error(path, str(failure), attempts, response) from None
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
        self,
        endpoint: str,
        params: Mapping[str, Any] | None = None,
        *,
        sliced: bool = True,
        rank: Rank = Rank.WALK,
    ) -> Listing:
        """A walk over every record of `endpoint` (e.g. "/invoices") with `params`.

        `sliced=False`: the service sends every record on every page (payment sources), so the
        walk stops after the first page, whatever its `Link` header says. `rank`: which waiting
        request a freed in-flight slot goes to first (`api.in_flight.Rank`).
        """
        params = {"per_page": self.settings.page_size, **(params or {})}
        return Listing(self, endpoint, params, sliced=sliced, rank=rank)

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
    ) -> Listing:
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
        return self.listing(
            obj.list_endpoint(customer), query, sliced=obj.sliced_pages, rank=_rank(obj)
        )

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


def _rank(obj: InvoicedObject) -> Rank:
    """The customers' walk goes first (the per-customer listings wait for their ids), and the
    per-customer listings last (thousands of one-page listings fill the slots walks leave)."""
    if obj is CUSTOMERS:
        return Rank.AWAITED
    return Rank.PER_CUSTOMER if obj.per_customer else Rank.WALK
