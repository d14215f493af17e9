"""The Invoiced resource walks listings exactly, survives transient faults and fails clearly.

Proves: every record once at page sizes 1, 7 and 100 (and past offset 10,000); the listing quirks
(all subscriptions, payments' applications); exact results under 10 % injected faults and 429s;
401/404/400 fail at once with the API's message; retries stop at their bound with a clear error;
the key never shows in logs, errors or reprs; settings are validated; proxies and CA bundle are
taken from the environment. The in-flight limit halves once per burst of 429s and grows back by
one per `limit` answers, between one and its ceiling; a key crowded by other integrations lowers
it, and every record still arrives. A freed slot goes to a request already waiting: the
customers' pages first (the per-customer listings wait for them), then other walks' pages, then
the per-customer listings, each in the order asked.
"""

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from invoiced_assets import catalogue
from invoiced_assets.api import InvoicedResource
from invoiced_assets.api.errors import (
    InvoicedAPIError,
    InvoicedAuthenticationError,
    InvoicedConnectionError,
    InvoicedCustomerNotFoundError,
    InvoicedInvalidRequestError,
    InvoicedNotFoundError,
    InvoicedRateLimitError,
)
from invoiced_assets.api.in_flight import InFlightLimit, Rank
from invoiced_assets.catalogue import CATALOGUE
from invoiced_assets.emulator import EmulatorServer, FaultConfig
from invoiced_assets.emulator.server import ApiError

from .conftest import API_KEY, fast_client, fast_resource, wait_for

# Objects whose every record is in one listing (not per customer, no archived variant), events
# aside (its own test: it is the longest listing).
SINGLE_LISTINGS = [
    o for o in CATALOGUE if not o.per_customer and len(o.list_variants) == 1 and not o.append_only
]


def ids_of(listing) -> list:
    return [record["id"] for record in listing.records()]


@pytest.mark.parametrize("page_size", [1, 7, 100])
def test_walks_every_record_once(emulator: EmulatorServer, page_size: int) -> None:
    client = fast_client(emulator.url, page_size=page_size)
    objects = ["customers", "credit_balance_adjustments"] if page_size == 1 else None
    for obj in SINGLE_LISTINGS:
        if objects and obj.name not in objects:
            continue
        listing = client.object_listing(obj.name)
        ids = ids_of(listing)
        truth = [r["id"] for r in emulator.records(obj.name)]
        assert sorted(ids) == sorted(truth), obj.name
        assert len(ids) == len(set(ids)) == emulator.truth()[obj.name]
        stats = listing.stats
        assert stats.records == len(ids) and stats.total_count == len(ids)
        assert stats.pages == max(1, -(-len(ids) // page_size)) and stats.retries == 0


def test_variants_and_per_customer_listings_cover_everything(emulator: EmulatorServer) -> None:
    client = fast_client(emulator.url, page_size=7)
    plans = [
        r["id"]
        for variant in catalogue.PLANS.list_variants
        for r in client.object_listing("plans", params=variant).records()
    ]
    assert sorted(plans) == sorted(r["id"] for r in emulator.records("plans"))
    assert any(r["archived"] for r in emulator.records("plans"))
    contacts = [
        (customer["id"], r["id"])
        for customer in emulator.records("customers")
        for r in client.object_listing("contacts", customer=customer["id"]).records()
    ]
    assert sorted(contacts) == sorted(
        (r["customer_id"], r["id"]) for r in emulator.records("contacts")
    )
    events = client.object_listing("events").records()
    newest_first = [next(events)["id"] for _ in range(3)]
    assert newest_first == sorted(newest_first, reverse=True)


def test_listing_longer_than_ten_thousand_records() -> None:
    with EmulatorServer(scale=2.2, seed=3, api_key=API_KEY) as server:
        client = fast_client(server.url)
        listing = client.object_listing("invoices")
        ids = ids_of(listing)
        assert len(ids) == len(set(ids)) == server.truth()["invoices"] > 10_000
        assert listing.stats.pages == -(-len(ids) // 100)


def test_quirks_subscriptions_and_payment_applications(emulator: EmulatorServer) -> None:
    client = fast_client(emulator.url)
    subscriptions = list(client.object_listing("subscriptions").records())
    statuses = {s["status"] for s in subscriptions}
    assert {"canceled", "finished"} <= statuses  # hidden unless all=1
    assert len(subscriptions) == emulator.truth()["subscriptions"]
    payments = list(client.object_listing("payments").records())
    assert all("applied_to" in p for p in payments)
    assert sum(len(p["applied_to"]) for p in payments) > 0


def test_passes_filters_through(emulator: EmulatorServer) -> None:
    client = fast_client(emulator.url)
    invoices = emulator.records("invoices")
    dates = sorted(i["date"] for i in invoices)
    start, end = dates[len(dates) // 4], dates[len(dates) // 2]
    window = list(client.object_listing("invoices", start_date=start, end_date=end).records())
    assert {i["id"] for i in window} == {i["id"] for i in invoices if start <= i["date"] <= end}
    cutoff = sorted(i["updated_at"] for i in invoices)[len(invoices) // 2]
    newer = list(client.object_listing("invoices", updated_after=cutoff).records())
    assert {i["id"] for i in newer} == {i["id"] for i in invoices if i["updated_at"] > cutoff}
    customer = invoices[0]["customer"]
    theirs = list(client.object_listing("invoices", filters={"customer": customer}).records())
    assert {i["id"] for i in theirs} == {i["id"] for i in invoices if i["customer"] == customer}
    by_date = list(client.object_listing("invoices", sort="date asc").records())
    assert [i["date"] for i in by_date] == sorted(i["date"] for i in by_date)
    assert client.get_record("invoices", invoices[0]["id"]) == invoices[0]


def test_exact_under_faults_and_rate_limits(fresh_emulator: EmulatorServer) -> None:
    fresh_emulator.set_faults(
        FaultConfig(fault_rate=0.10, retry_after_seconds=0, fault_seed=5, max_in_flight=3)
    )
    client = fast_client(fresh_emulator.url, page_size=25, max_in_flight=6)
    results: dict[str, list] = {}
    listings = {obj.name: client.object_listing(obj.name) for obj in SINGLE_LISTINGS}

    def walk(name: str) -> None:
        results[name] = ids_of(listings[name])

    threads = [threading.Thread(target=walk, args=(name,)) for name in listings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, ids in results.items():
        truth = sorted(r["id"] for r in fresh_emulator.records(name))
        assert sorted(ids) == truth, name
    assert sum(listing.stats.retries for listing in listings.values()) > 0
    assert sum(listing.stats.rate_limited for listing in listings.values()) > 0
    assert fresh_emulator.stats()["faults_injected"] > 0


@pytest.mark.parametrize(
    "kind", ["500_json", "502_html", "503_html", "drop", "429_no_retry_after", "truncated_json"]
)
def test_each_fault_kind_is_retried(fresh_emulator: EmulatorServer, kind: str) -> None:
    fresh_emulator.set_faults(
        FaultConfig(fault_rate=0.5, fault_kinds=(kind,), retry_after_seconds=0, fault_seed=1)
    )
    client = fast_client(fresh_emulator.url, page_size=20, max_retries=12)
    listing = client.object_listing("customers")
    assert sorted(ids_of(listing)) == sorted(r["id"] for r in fresh_emulator.records("customers"))
    assert listing.stats.retries > 0


def test_retry_after_is_honoured(fresh_emulator: EmulatorServer) -> None:
    fresh_emulator.set_faults(
        FaultConfig(fault_rate=1.0, fault_kinds=("429_retry_after",), retry_after_seconds=0.2)
    )
    client = fast_client(fresh_emulator.url, max_retries=1)
    waits: list[float] = []
    client.sleep = waits.append  # record the waits instead of timing them
    with pytest.raises(InvoicedRateLimitError, match=r"/customers.*2 attempts"):
        client.get("/customers")
    assert waits == [0.2]  # one honoured Retry-After of 0.2 s (the backoff alone is 0.001 s)


def test_a_backoff_holds_no_in_flight_slot(
    fresh_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one request in flight allowed, another request is answered while the first waits
    out its backoff: the wait is outside the slot, and not counted as waiting on the API."""
    route = fresh_emulator._route
    failed_once: list[str] = []

    def first_invoices_fail(method: str, target: str, *rest: Any) -> Any:
        if target.startswith("/invoices") and not failed_once:
            failed_once.append(target)
            return ApiError(503, "Service unavailable", "api_error").response()
        return route(method, target, *rest)

    monkeypatch.setattr(fresh_emulator, "_route", first_invoices_fail)
    client = fast_client(fresh_emulator.url, max_in_flight=1)
    backing_off, resume = threading.Event(), threading.Event()

    def held(seconds: float) -> None:
        backing_off.set()
        resume.wait(30)

    client.sleep = held
    fetched: list[Any] = []
    first = threading.Thread(target=lambda: fetched.append(client.get("/invoices")))
    first.start()
    assert backing_off.wait(30)
    assert client.waiting_seconds() == 0.0  # a wait between attempts is not the API's
    other = fast_client(fresh_emulator.url, max_in_flight=1)  # the same process-wide slot
    assert other.get("/customers", {"per_page": 1}).attempts == 1
    resume.set()
    first.join(30)
    assert fetched and fetched[0].attempts == 2 and failed_once


@pytest.mark.parametrize(
    "kind, error",
    [
        ("500_json", InvoicedAPIError),
        ("502_html", InvoicedAPIError),
        ("truncated_json", InvoicedAPIError),
        ("drop", InvoicedConnectionError),
        ("429_no_retry_after", InvoicedRateLimitError),
    ],
)
def test_retries_stop_at_the_bound(fresh_emulator: EmulatorServer, kind: str, error: type) -> None:
    fresh_emulator.set_faults(FaultConfig(fault_rate=1.0, fault_kinds=(kind,)))
    fresh_emulator.reset_stats()
    client = fast_client(fresh_emulator.url, max_retries=3)
    with pytest.raises(error) as raised:
        list(client.object_listing("customers").records())
    message = str(raised.value)
    assert "/customers" in message and "4 attempts" in message
    assert API_KEY not in message
    assert fresh_emulator.stats()["requests"] == 4


def test_wrong_key_fails_at_once_and_says_what_to_do(emulator: EmulatorServer) -> None:
    client = fast_client(emulator.url, api_key="wrong-key-abcdef")
    before = emulator.stats()["requests"]
    with pytest.raises(InvoicedAuthenticationError) as raised:
        list(client.object_listing("invoices").records())
    message = str(raised.value)
    assert "HTTP 401" in message and "Settings → Developers → API Keys" in message
    assert "wrong-key-abcdef" not in message
    assert emulator.stats()["requests"] - before == 1  # not retried


def test_not_found_and_bad_request_fail_at_once(emulator: EmulatorServer) -> None:
    client = fast_client(emulator.url)
    with pytest.raises(InvoicedNotFoundError, match="HTTP 404"):
        client.get_record("invoices", 999_999_999)
    with pytest.raises(InvoicedInvalidRequestError, match="bogus") as raised:
        list(client.listing("/customers", {"bogus": "1"}).records())
    assert raised.value.status == 400 and raised.value.api_message


def test_only_customer_not_found_says_a_customer_is_gone(emulator: EmulatorServer) -> None:
    """A per-customer listing's 404 `Customer was not found` is the one 404 a sync may skip;
    `Request was not recognized` (a wrong path or base URL) is an ordinary, clear failure."""
    client = fast_client(emulator.url)
    with pytest.raises(InvoicedCustomerNotFoundError, match="Customer was not found: 999"):
        list(client.object_listing("payment_sources", customer=999_999_999).records())
    with pytest.raises(InvoicedNotFoundError) as raised:
        list(client.listing("/customers/1/no_such_listing").records())
    assert not isinstance(raised.value, InvoicedCustomerNotFoundError)
    message = str(raised.value)
    assert "Request was not recognized: GET /customers/1/no_such_listing" in message
    assert "INVOICED_BASE_URL" in message and raised.value.path == "/customers/1/no_such_listing"
    # Contacts of a missing customer are an empty listing, as the service answers.
    assert list(client.object_listing("contacts", customer=999_999_999).records()) == []


def test_timeouts_are_retried_then_reported(fresh_emulator: EmulatorServer) -> None:
    fresh_emulator.set_faults(FaultConfig(latency_ms=300))
    fresh_emulator.reset_stats()
    client = fast_client(fresh_emulator.url, read_timeout_seconds=0.05, max_retries=2)
    with pytest.raises(InvoicedConnectionError, match=r"GET /customers failed after 3 attempts"):
        client.get("/customers")
    assert fresh_emulator.stats()["requests"] == 3


def test_unreachable_host_is_a_connection_error() -> None:
    client = fast_client("http://127.0.0.1:9", max_retries=1)
    with pytest.raises(InvoicedConnectionError, match=r"GET /customers failed after 2 attempts"):
        client.check_connection()


def test_check_connection(emulator: EmulatorServer) -> None:
    check = fast_resource(emulator.url).check_connection()
    assert check.customers == emulator.truth()["customers"]
    assert "the API key works" in str(check)
    with pytest.raises(InvoicedAuthenticationError):
        fast_resource(emulator.url, api_key="nope-nope").check_connection()


def test_key_never_in_logs_errors_or_reprs(
    fresh_emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fresh_emulator.set_faults(FaultConfig(fault_rate=0.3, retry_after_seconds=0, fault_seed=2))
    resource = fast_resource(fresh_emulator.url)
    client = resource.get_client()
    list(client.object_listing("customers").records())
    fresh_emulator.set_faults(FaultConfig(fault_rate=1.0, fault_kinds=("500_json",)))
    with pytest.raises(InvoicedAPIError) as raised:
        client.get("/invoices")
    texts = [caplog.text, str(raised.value), repr(raised.value), repr(resource), str(resource)]
    texts += [repr(client), repr(client.settings)]
    assert caplog.text  # retries were logged
    for text in texts:
        assert API_KEY not in text


def test_pagination_never_leaves_the_api_host(emulator: EmulatorServer) -> None:
    client = fast_client(emulator.url)
    with pytest.raises(InvoicedAPIError, match="another host"):
        client.get("https://evil.example.com/customers")


def test_resource_settings_are_validated() -> None:
    with pytest.raises(Exception, match="https"):
        InvoicedResource(api_key="k", base_url="http://api.example.com")
    with pytest.raises(Exception, match="less than or equal to 100"):
        InvoicedResource(api_key="k", page_size=101)
    with pytest.raises(Exception, match="less than or equal to 20"):
        InvoicedResource(api_key="k", max_in_flight=21)
    resource = InvoicedResource(api_key="k", environment="sandbox")
    assert resource.settings().base_url == "https://api.sandbox.invoiced.com"
    with pytest.raises(Exception, match="INVOICED_API_KEY"):
        InvoicedResource(api_key=" ").settings()


def test_in_flight_cap_is_respected(fresh_emulator: EmulatorServer) -> None:
    fresh_emulator.set_faults(FaultConfig(latency_ms=20, max_in_flight=3))
    fresh_emulator.reset_stats()
    client = fast_client(fresh_emulator.url, page_size=10, max_in_flight=3)
    threads = [
        threading.Thread(target=lambda n=obj.name: list(client.object_listing(n).records()))
        for obj in SINGLE_LISTINGS
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = fresh_emulator.stats()
    assert stats["max_in_flight_seen"] <= 3
    assert stats["by_status"].get("429", 0) == 0


def test_proxies_and_ca_bundle_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Read once per session (not per request), with the same answer requests would give."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # lower case ones would win
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "bypassed.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    proxied = fast_client("https://api.invoiced.com")._session()
    assert proxied.proxies.get("https") == "http://proxy.example:3128"
    assert proxied.verify == str(bundle)
    assert not proxied.trust_env  # nothing read from the environment per request
    assert "https" not in fast_client("https://bypassed.example")._session().proxies


def test_the_in_flight_limit_halves_on_a_burst_of_429s_and_grows_back() -> None:
    """On the limit alone, outcome by outcome: no threads, no timing."""
    limit = InFlightLimit(16)
    held = [limit.slot() for _ in range(4)]
    outcomes = [slot.__enter__() for slot in held]
    held[3].__exit__(None, None, None)  # answered while the limit is at its ceiling
    for slot, outcome in zip(held[:3], outcomes, strict=False):
        outcome.rate_limited = True  # three answers of one burst, all started before any 429
        slot.__exit__(None, None, None)
    assert limit.limit == 8, "one burst halves the limit once"
    for answered in range(8):
        with limit.slot():
            pass
        assert limit.limit == (9 if answered == 7 else 8), "one more per `limit` answers"
    with limit.slot() as outcome:
        outcome.rate_limited = True
    assert limit.limit == 4
    for _ in range(200):
        with limit.slot():
            pass
    assert limit.limit == 16, "back to the ceiling, never above it"
    for _ in range(6):
        with limit.slot() as outcome:
            outcome.rate_limited = True
    assert limit.limit == 1, "never below one"


def granted_in_order(limit: InFlightLimit, requests: list[tuple[str, Rank]]) -> list[str]:
    """With the limit's only slot held, queue `requests` (name, rank) one by one, then free
    the slot: the names in the order they were given it. No timing: each request is queued
    (`waiting`) before the next is made."""
    order: list[str] = []
    holder = limit.slot()
    holder.__enter__()

    def request(name: str, rank: Rank) -> None:
        with limit.slot(rank):
            order.append(name)

    threads = []
    for queued, (name, rank) in enumerate(requests, start=1):
        threads.append(threading.Thread(target=request, args=(name, rank)))
        threads[-1].start()
        wait_for(f"{name} queued", lambda queued=queued: limit.waiting == queued, interval=0.001)
    holder.__exit__(None, None, None)
    for thread in threads:
        thread.join(timeout=10)
    return order


def test_a_freed_slot_goes_by_rank_then_in_the_order_asked() -> None:
    """One slot: per-customer listings queued first, then walks' pages, then the customers'
    page; the customers go first, then the walks, then the per-customer listings, each in the
    order asked."""
    limit = InFlightLimit(1)
    order = granted_in_order(
        limit,
        [
            ("contacts 1", Rank.PER_CUSTOMER),
            ("contacts 2", Rank.PER_CUSTOMER),
            ("notes p2", Rank.WALK),
            ("invoices p5", Rank.WALK),
            ("customers p9", Rank.AWAITED),
        ],
    )
    assert order == ["customers p9", "notes p2", "invoices p5", "contacts 1", "contacts 2"]
    assert limit.waiting == 0


def test_a_freed_slot_goes_to_a_waiting_request_not_to_the_next_to_ask() -> None:
    """The holder frees its slot and asks again at once: the request already waiting goes
    first (a thread that keeps asking cannot keep the slot to itself)."""
    limit = InFlightLimit(1)
    order: list[str] = []
    waiting = threading.Thread(target=lambda: _hold_once(limit, order, "waiting"))
    with limit.slot():
        waiting.start()
        wait_for("a request queued", lambda: limit.waiting == 1, interval=0.001)
    _hold_once(limit, order, "asked again")
    waiting.join(timeout=10)
    assert order == ["waiting", "asked again"]


def _hold_once(limit: InFlightLimit, order: list[str], name: str) -> None:
    with limit.slot():
        order.append(name)


def test_each_listing_ranks_its_pages(emulator: EmulatorServer) -> None:
    """Every page of the customers is awaited (the per-customer listings wait for them), of a
    customer's contacts per-customer, and of any other listing a walk's."""
    asked: list[Rank] = []

    class Recording(InFlightLimit):
        def slot(self, rank: Rank = Rank.WALK):  # type: ignore[override]
            asked.append(rank)
            return super().slot(rank)

    client = fast_client(emulator.url, page_size=7)
    client.in_flight = Recording(4)
    customer = emulator.records("customers")[0]["id"]
    for name, customer_listed, rank in [
        ("credit_notes", None, Rank.WALK),
        ("customers", None, Rank.AWAITED),
        ("contacts", customer, Rank.PER_CUSTOMER),
    ]:
        asked.clear()
        list(client.object_listing(name, customer=customer_listed))
        assert asked and set(asked) == {rank}, name


def test_a_crowded_key_lowers_the_limit_and_every_record_still_arrives(
    fresh_emulator: EmulatorServer,
) -> None:
    """The key's 20 mostly taken by other integrations: the service lets 4 of ours through."""
    fresh_emulator.set_faults(FaultConfig(latency_ms=5, max_in_flight=4, retry_after_seconds=0))
    fresh_emulator.reset_stats()
    client = fast_client(fresh_emulator.url, page_size=10, max_in_flight=16)
    listings = [client.object_listing(obj.name) for obj in SINGLE_LISTINGS]
    results: dict[str, list] = {}
    threads = [
        threading.Thread(target=lambda lst=lst: results.setdefault(lst.endpoint, ids_of(lst)))
        for lst in listings
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for obj, listing in zip(SINGLE_LISTINGS, listings, strict=True):
        truth = sorted(r["id"] for r in fresh_emulator.records(obj.name))
        assert sorted(results[listing.endpoint]) == truth, obj.name
    assert fresh_emulator.stats()["by_status"].get("429", 0) > 0
    assert client.in_flight.times_lowered > 0
