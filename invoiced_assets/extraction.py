"""Read several Invoiced listings at once and shape them into tables, as each one completes.

Measured on 2 cores (see benchmarks/full_load.py): one Dagster step per listing pays a process
start and the dagster/pandas import per step, and the default executor runs only as many steps as
there are CPUs; threads in one step overlap every listing's network waits.

Pages of one listing stay strictly in order: the service refuses or duplicates out-of-order
pages. What runs side by side are separate listings: the objects, and, for the long listings that
accept `start_date`/`end_date` (invoices, payments, credit notes, estimates), contiguous,
non-overlapping date windows of one object, each walked in order. A full walk is then no longer
bounded by the longest listing's page chain. Every request stays within the client's
process-wide cap on requests in flight.

All of that pays only while pages wait on the network. When the API answers in under
FAST_ROUND_TRIP_SECONDS the read is CPU-bound: listings are not split, and the objects are read
one after another, so that each is complete (and written by the step) as early as it can be.
"""

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from invoiced_assets.api_errors import (
    InvoicedAuthenticationError,
    InvoicedCustomerNotFoundError,
    InvoicedError,
    InvoicedNotFoundError,
)
from invoiced_assets.catalogue import CUSTOMERS, InvoicedObject
from invoiced_assets.invoiced_api import InvoicedClient, Listing, ListingStats
from invoiced_assets.shaping import ObjectShaper, ShapedTable
from invoiced_assets.table_data import BatchDirectory

PROGRESS_LOG_INTERVAL_SECONDS = 10.0
# A listing of more pages than this is split into date windows of about this many pages.
PAGES_PER_WINDOW = 25
MAX_WINDOWS = 32
# Threads pay when pages wait on the network. When the API answers faster than this, the read is
# CPU-bound: long listings are not split into date windows, and objects are read one at a time
# (measured at 0 ms latency: more threads added 10-20 % of CPU, and every object finished late).
FAST_ROUND_TRIP_SECONDS = 0.02
# How often the objects not started yet look at whether those being read wait on the API.
PACE_CHECK_SECONDS = 0.02
_default_log = logging.getLogger(__name__).info


class ExtractionCancelled(Exception):
    """Another listing failed in a way that dooms this one (e.g. the key was rejected)."""


@dataclass(frozen=True)
class ReadPlan:
    """What to read of one object: every record, or those updated after a cursor."""

    obj: InvoicedObject
    tables: frozenset[str] = field(default_factory=frozenset)
    updated_after: int | None = None  # records updated after this (None: a full read)
    after_id: int | None = None  # append-only listings: records after this id
    # Per-customer listings read incrementally: customers to read again whatever their
    # updated_at says (their contacts changed, according to the events).
    also_customers: frozenset = field(default_factory=frozenset)

    @property
    def incremental(self) -> bool:
        """Whether this read takes only what changed (else it reads every record)."""
        return self.updated_after is not None or self.after_id is not None


@dataclass
class Extraction:
    """The outcome of reading one object: its shaped tables, or the error that stopped it."""

    plan: ReadPlan
    stats: ListingStats
    tables: dict[str, ShapedTable] | None = None
    ids: set | None = None  # every primary key read, for reference checks
    max_updated_at: int | None = None  # the newest updated_at read (the incremental cursor)
    max_id: int | None = None  # append-only listings: the newest id read
    customers_read: "CustomerRead | None" = None  # per-customer objects: whose listings
    error: BaseException | None = None

    @property
    def obj(self) -> InvoicedObject:
        return self.plan.obj


Window = tuple[int | None, int | None]


@dataclass
class CustomerRead:
    """The customers whose per-customer listings a read covers."""

    ids: set[Any]
    max_updated_at: int | None
    requests: int = 0

    @classmethod
    def walk(cls, client: InvoicedClient, updated_after: int | None) -> "CustomerRead":
        """Customers (updated after the cursor, or all), from the customers listing."""
        listing = client.object_listing("customers", updated_after=updated_after)
        ids: set[Any] = set()
        newest: int | None = None
        for page in listing:
            ids.update(record["id"] for record in page)
            stamps = [r["updated_at"] for r in page if isinstance(r.get("updated_at"), int)]
            newest = max([*stamps, *([newest] if newest is not None else [])], default=None)
        return cls(ids, newest, listing.stats.requests)


class CustomerIds:
    """Every customer id, for per-customer listings: from this run's full customers read when
    there is one (awaited), else from a walk of the customers listing of their own (once)."""

    def __init__(self, client: InvoicedClient, *, from_customers_read: bool) -> None:
        self._future: Future[CustomerRead] = Future()
        self._client = client
        self._from_customers_read = from_customers_read
        self._lock = threading.Lock()

    def set(self, read: CustomerRead) -> None:
        if not self._future.done():
            self._future.set_result(read)

    def fail(self, error: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(error)

    def result(self) -> CustomerRead:
        if not self._from_customers_read:
            with self._lock:
                if not self._future.done():
                    self._future.set_result(CustomerRead.walk(self._client, None))
        return self._future.result()


def date_windows(
    client: InvoicedClient, obj: InvoicedObject, params: Mapping[str, Any], stats: ListingStats
) -> list[Window]:
    """Contiguous, non-overlapping `date` windows covering the whole listing (one if short).

    A one-record request sizes the listing (X-Total-Count) and times a round trip; when windows
    pay, one-record requests for the earliest and the latest `date` place them (all counted in
    `stats`). The first window has no start and the last no end, so no date is left out.
    """
    if not obj.date_filterable:
        return [(None, None)]
    # Timed on an unsorted request: a sorted one also times the service's sort (measured on the
    # emulator: 112 ms for the first sorted request of invoices, 1-4 ms unsorted).
    started = time.monotonic()
    head = client.get(obj.endpoint, {**params, "per_page": 1})
    round_trip = time.monotonic() - started
    stats.requests += head.attempts
    total = head.response.headers.get("X-Total-Count", "")
    pages = math.ceil(int(total) / client.settings.page_size) if total.isdigit() else 0
    count = min(MAX_WINDOWS, pages // PAGES_PER_WINDOW)
    if count < 2 or not head.body or round_trip < FAST_ROUND_TRIP_SECONDS:
        return [(None, None)]
    earliest = client.get(obj.endpoint, {**params, "sort": f"{obj.date_field} asc", "per_page": 1})
    stats.requests += earliest.attempts
    latest = client.get(obj.endpoint, {**params, "sort": f"{obj.date_field} desc", "per_page": 1})
    stats.requests += latest.attempts
    field = obj.date_field or "date"
    first, last = (earliest.body or [{}])[0].get(field), (latest.body or [{}])[0].get(field)
    if not isinstance(first, int) or not isinstance(last, int) or last - first < count:
        return [(None, None)]
    bounds = [first + (last - first) * i // count for i in range(1, count)]
    starts: list[int | None] = [None, *bounds]
    ends: list[int | None] = [*(b - 1 for b in bounds), None]
    return list(zip(starts, ends, strict=True))


def _merge_stats(name: str, listings: list[Listing], elapsed: float) -> ListingStats:
    merged = ListingStats(listing=name, elapsed_seconds=elapsed)
    # A listing with no page answered is one of a deleted customer (404): it counts nothing.
    totals = [listing.stats.total_count for listing in listings if listing.stats.pages]
    merged.total_count = None if None in totals else sum(t for t in totals if t is not None)
    for listing in listings:
        for attribute in ("pages", "records", "requests", "retries", "rate_limited"):
            setattr(
                merged, attribute, getattr(merged, attribute) + getattr(listing.stats, attribute)
            )
        merged.bytes_received += listing.stats.bytes_received
    return merged


class _Progress:
    """Logs a listing's progress at most every PROGRESS_LOG_INTERVAL_SECONDS."""

    def __init__(self, name: str, listings: list[Listing], page_size: int, log: Callable) -> None:
        self._name, self._listings, self._page_size, self._log = name, listings, page_size, log
        self._started = self._last = time.monotonic()
        self._lock = threading.Lock()

    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < PROGRESS_LOG_INTERVAL_SECONDS:
                return
            self._last = now
        stats = _merge_stats(self._name, self._listings, now - self._started)
        started = sum(1 for listing in self._listings if listing.stats.pages)
        self._log(
            _progress_line(
                self._name,
                stats,
                self._page_size,
                now - self._started,
                listings=(started, len(self._listings)),
            )
        )


def _progress_line(
    name: str,
    stats: ListingStats,
    page_size: int,
    elapsed: float,
    *,
    listings: tuple[int, int] = (1, 1),
) -> str:
    rate = stats.records / elapsed if elapsed > 0 else 0.0
    started, count = listings
    if count > 1:
        # Date windows or one listing per customer: a total is known only for those started.
        return (
            f"{name}: {stats.records} records in {stats.pages} pages, {started} of {count}"
            f" listings started ({rate:.0f} records/s)"
        )
    line = f"{name}: page {stats.pages}"
    if stats.total_count is not None:
        pages_total = max(1, -(-stats.total_count // page_size))
        left = max(0, stats.total_count - stats.records)
        eta = f", about {left / rate:.0f}s left" if rate else ""
        line += f" of {pages_total}, {stats.records}/{stats.total_count} records{eta}"
    else:
        line += f", {stats.records} records"
    return line + f" ({rate:.0f} records/s)"


def _page_filter(plan: ReadPlan, stop: threading.Event) -> Callable[[list], list]:
    """Append-only listings are newest first: keep what is newer than the cursor, then stop."""
    if plan.after_id is None:
        return lambda page: page

    def newer(page: list) -> list:
        fresh = [record for record in page if int(record["id"]) > plan.after_id]
        if len(fresh) < len(page):
            stop.set()
        return fresh

    return newer


def _customer_listings(
    client: InvoicedClient, plan: ReadPlan, customers: "CustomerIds"
) -> tuple[list[tuple[Listing, dict[str, Any]]], CustomerRead]:
    """One listing per customer (and per variant) for a per-customer object."""
    if plan.updated_after is not None:
        # Only customers changed since the cursor: their listings are read again whole.
        changed = CustomerRead.walk(client, plan.updated_after)
        changed.ids |= plan.also_customers
    else:
        changed = customers.result()
    column = plan.obj.customer_column
    listings = [
        (client.object_listing(plan.obj.name, customer=customer, params=variant), {column: customer})
        for customer in sorted(changed.ids, key=str)
        for variant in plan.obj.list_variants
    ]  # fmt: skip
    return listings, changed


# How many of the skipped customers are looked up before every listing skipped is believed.
SKIPPED_CUSTOMERS_LOOKED_UP = 3


def _check_not_all_skipped(
    client: InvoicedClient, obj: InvoicedObject, skipped: list[Any], listed: int
) -> None:
    """Fail when every customer's listing answered "Customer was not found" while one of those
    customers still exists: then the answers are wrong, not the customers gone."""
    if not skipped or len(skipped) < listed:
        return
    for customer in sorted(skipped, key=str)[:SKIPPED_CUSTOMERS_LOOKED_UP]:
        try:
            client.get(f"{CUSTOMERS.endpoint}/{customer}", {})
        except InvoicedCustomerNotFoundError:
            continue  # gone indeed (deleted during the read)
        raise InvoicedNotFoundError(
            f"{obj.name}: all {listed} listings {obj.endpoint} answered 404 Customer was not"
            f" found, yet customer {customer} exists ({CUSTOMERS.endpoint}/{customer} answers):"
            " no table is published rather than an empty one. Check INVOICED_BASE_URL and that"
            " the API key belongs to the account whose customers were listed.",
            path=obj.endpoint,
            status=404,
        )


def extract_object(
    client: InvoicedClient,
    plan: ReadPlan,
    *,
    cancelled: threading.Event | None = None,
    customers: "CustomerIds | None" = None,
    batches: BatchDirectory | None = None,
    log: Callable[[str], None] = _default_log,
) -> Extraction:
    """Read one object (its listings side by side), shaping each page as it arrives.

    An object's listings are its date windows, its variants (archived plans and items), or one
    per customer. Then the complete listing's X-Total-Count is asked once more, so the
    row-count check can allow for records created or deleted during the read. With `batches`,
    long tables are written there batch by batch rather than held whole.
    """
    obj = plan.obj

    def stop_if_cancelled() -> None:
        if cancelled is not None and cancelled.is_set():
            raise ExtractionCancelled(f"{obj.name}: stopped because another listing failed")

    stop_if_cancelled()
    started = time.monotonic()
    planning = ListingStats(obj.endpoint)
    read_customers: CustomerRead | None = None
    if obj.per_customer:
        assert customers is not None
        listings, read_customers = _customer_listings(client, plan, customers)
    else:
        listings = []
        for variant in obj.list_variants:
            base = client.object_listing(obj.name, updated_after=plan.updated_after, params=variant)
            windows = [(None, None)]
            if not plan.incremental:
                windows = date_windows(client, obj, base.params, planning)
            listings += [
                (
                    client.object_listing(
                        obj.name,
                        updated_after=plan.updated_after,
                        start_date=start,
                        end_date=end,
                        params=variant,
                    ),
                    {},
                )
                for start, end in windows
            ]
    shaper = ObjectShaper(obj, plan.tables, batches=batches)
    shaper_lock = threading.Lock()
    progress = _Progress(
        obj.name, [listing for listing, _ in listings], client.settings.page_size, log
    )
    stop = threading.Event()
    keep = _page_filter(plan, stop)
    failed = threading.Event()  # a listing of this object failed: the others stop
    skipped: list[Any] = []  # customers whose listing answered "Customer was not found"

    def walk(listing: Listing, extra: dict[str, Any]) -> None:
        try:
            read(listing, extra)
        except BaseException as exc:
            if obj.per_customer and isinstance(exc, InvoicedCustomerNotFoundError):
                # Deleted since its id was read: the service deleted its records with it.
                skipped.append(extra[obj.customer_column])
                return
            failed.set()
            raise

    def read(listing: Listing, extra: dict[str, Any]) -> None:
        pages = iter(listing)
        while True:
            stop_if_cancelled()  # before each request, the first one included
            if failed.is_set():
                raise ExtractionCancelled(f"{obj.name}: stopped because a listing failed")
            page = next(pages, None)
            if page is None:
                break
            page = keep(page)
            if extra:
                # The record's own field wins: contacts name their customer themselves.
                page = [{**extra, **record} for record in page]
            with shaper_lock:
                shaper.add_page(page)
            progress.tick()
            if stop.is_set():
                break

    if len(listings) == 1:
        walk(*listings[0])
    elif listings:
        workers = min(len(listings), max(2, client.settings.max_in_flight))
        with ThreadPoolExecutor(workers, thread_name_prefix=f"{obj.name}-listing") as pool:
            futures = [pool.submit(walk, *listing) for listing in listings]
        errors = [error for future in futures if (error := future.exception()) is not None]
        if errors:
            # The failure itself, rather than the cancellations of its siblings it caused.
            raise next((e for e in errors if not isinstance(e, ExtractionCancelled)), errors[0])
    if obj.per_customer:
        _check_not_all_skipped(client, obj, skipped, len(listings))
    stats = _merge_stats(
        obj.endpoint, [listing for listing, _ in listings], time.monotonic() - started
    )
    stats.requests += planning.requests
    if not obj.per_customer:
        # The whole listing (every variant), whatever part of it was read.
        complete = [client.object_listing(obj.name, params=v) for v in obj.list_variants]
        counts = [listing.count_now() for listing in complete]
        stats.total_count_after = (
            None if None in counts else sum(c for c in counts if c is not None)
        )
        stats.requests += sum(listing.stats.requests for listing in complete)
    if plan.incremental and not obj.per_customer:
        stats.total_count = None  # the read's own count covers only the changes
    if read_customers is not None:
        stats.requests += read_customers.requests
    max_updated_at = read_customers.max_updated_at if read_customers else shaper.max_updated_at
    return Extraction(
        plan,
        stats,
        tables=shaper.finish(),
        ids=shaper.ids,
        max_updated_at=max_updated_at,
        max_id=shaper.max_id,
        customers_read=read_customers,
    )


def extract_concurrently(
    client: InvoicedClient,
    plans: Iterable[ReadPlan],
    *,
    batches: BatchDirectory | None = None,
    log: Callable[[str], None] = _default_log,
    cancelled: threading.Event | None = None,
) -> Iterator[Extraction]:
    """Read every planned object side by side; yield each one as soon as it is complete.

    While the API answers fast (no request waits FAST_ROUND_TRIP_SECONDS), the objects are read
    one after another instead, customers first.

    A failed object is yielded with its error, after which the others continue (their tables are
    still worth writing), except when the key is rejected: then the rest stop early, as they do
    when `cancelled` is set.
    Per-customer objects wait for the customers read of the same run for their customer ids.
    """
    plans = list(plans)
    if not plans:
        return
    if cancelled is None:
        cancelled = threading.Event()
    full_customers_read = any(p.obj.name == "customers" and p.updated_after is None for p in plans)
    customers = CustomerIds(client, from_customers_read=full_customers_read)

    def read(plan: ReadPlan) -> Extraction:
        try:
            extraction = extract_object(
                client, plan, cancelled=cancelled, customers=customers, batches=batches, log=log
            )
        except BaseException as exc:
            if isinstance(exc, InvoicedAuthenticationError):
                cancelled.set()  # before any other object starts: they would be refused too
            if plan.obj.name == "customers":
                customers.fail(exc)
            raise
        if plan.obj.name == "customers" and plan.updated_after is None:
            customers.set(CustomerRead(extraction.ids or set(), extraction.max_updated_at))
        return extraction

    # Objects are started by a thread of their own, so that the next one starts on time however
    # long the consumer takes over the one it was handed (the step writes its tables meanwhile).
    completed: queue.SimpleQueue[tuple[ReadPlan, Future | None] | BaseException | None]
    completed = queue.SimpleQueue()
    scheduler = threading.Thread(
        target=_start_objects,
        args=(client, plans, read, cancelled, completed),
        name="invoiced-objects",
    )
    scheduler.start()
    try:
        while (item := completed.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            plan, future = item
            if future is None:
                error = ExtractionCancelled(f"{plan.obj.name}: not read because another failed")
                yield Extraction(plan, ListingStats(plan.obj.endpoint), error=error)
                continue
            try:
                yield future.result()
            except (InvoicedError, ExtractionCancelled, OSError, ValueError) as exc:
                yield Extraction(plan, ListingStats(plan.obj.endpoint), error=exc)
    except BaseException:
        # The consumer stopped (the step failed or was terminated), or an object failed in an
        # unexpected way: the other listings stop before their next request.
        cancelled.set()
        raise
    finally:
        scheduler.join()


def _start_objects(
    client: InvoicedClient,
    plans: list[ReadPlan],
    read: Callable[[ReadPlan], Extraction],
    cancelled: threading.Event,
    completed: "queue.SimpleQueue[tuple[ReadPlan, Future | None] | BaseException | None]",
) -> None:
    """Start each object's read, and hand each one over as it completes (then None).

    The next object starts when none is being read, or when a request of those being read has
    waited on the API for FAST_ROUND_TRIP_SECONDS. A fast API is thus read one object at a time
    (the read is CPU-bound: each object is complete, and written, sooner); a slow one has its
    objects started one after another until their waits overlap. The customers go first:
    per-customer objects wait for their ids. Once `cancelled`, no other object starts.
    """
    waiting = sorted(plans, key=lambda plan: (plan.obj.name != "customers", plan.obj.per_customer))
    try:
        with ThreadPoolExecutor(len(plans), thread_name_prefix="invoiced-listing") as pool:
            running: dict[Future, ReadPlan] = {}
            while (waiting and not cancelled.is_set()) or running:
                startable = waiting and not cancelled.is_set()
                if startable and (
                    not running or client.waiting_seconds() >= FAST_ROUND_TRIP_SECONDS
                ):
                    plan = waiting.pop(0)
                    running[pool.submit(read, plan)] = plan
                    continue
                done, _ = wait(
                    running,
                    timeout=PACE_CHECK_SECONDS if startable else None,
                    return_when=FIRST_COMPLETED,
                )
                for future in done:
                    completed.put((running.pop(future), future))
        for plan in waiting:  # never started: another listing failed
            completed.put((plan, None))
    except BaseException as exc:
        completed.put(exc)
    finally:
        completed.put(None)
