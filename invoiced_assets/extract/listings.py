"""Read one Invoiced object (its listings side by side) and shape it into tables.

Pages of one listing stay strictly in order: the service refuses or duplicates out-of-order
pages. What runs side by side are separate listings of the object: its date windows
(`windows`), its variants (archived plans and items), or one listing per customer
(`customers`). Every request stays within the client's process-wide cap on requests in flight.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from invoiced_assets.api import InvoicedClient, Listing, ListingStats
from invoiced_assets.api.errors import InvoicedCustomerNotFoundError
from invoiced_assets.catalogue import InvoicedObject
from invoiced_assets.extract.customers import (
    CustomerIds,
    CustomerRead,
    check_not_all_skipped,
    customer_listings,
)
from invoiced_assets.extract.side_by_side import ListingsTally, run_side_by_side
from invoiced_assets.extract.windows import date_windows
from invoiced_assets.tables.batches import BatchDirectory
from invoiced_assets.tables.shaping import ObjectShaper, ShapedTable

PROGRESS_LOG_INTERVAL_SECONDS = 10.0
default_log = logging.getLogger(__name__).info


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
    customers_read: CustomerRead | None = None  # per-customer objects: whose listings
    error: BaseException | None = None

    @property
    def obj(self) -> InvoicedObject:
        return self.plan.obj


class _Progress:
    """Logs an object's progress at most every PROGRESS_LOG_INTERVAL_SECONDS."""

    def __init__(
        self, name: str, tally: ListingsTally, count: int, page_size: int, log: Callable
    ) -> None:
        self._name, self._tally, self._count = name, tally, count
        self._page_size, self._log = page_size, log
        self._started = self._last = time.monotonic()
        self._lock = threading.Lock()

    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < PROGRESS_LOG_INTERVAL_SECONDS:
                return
            self._last = now
        stats, started = self._tally.snapshot(now - self._started)
        self._log(
            _progress_line(
                self._name,
                stats,
                self._page_size,
                now - self._started,
                listings=(started, self._count),
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


def extract_object(
    client: InvoicedClient,
    plan: ReadPlan,
    *,
    cancelled: threading.Event | None = None,
    customers: CustomerIds | None = None,
    batches: BatchDirectory | None = None,
    log: Callable[[str], None] = default_log,
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
    listings: Iterable[tuple[Listing, dict[str, Any]]]
    if obj.per_customer:
        assert customers is not None
        listings, count, read_customers = customer_listings(client, plan, customers)
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
        count = len(listings)
    shaper = ObjectShaper(obj, plan.tables, batches=batches)
    shaper_lock = threading.Lock()
    tally = ListingsTally(obj.endpoint)
    progress = _Progress(obj.name, tally, count, client.settings.page_size, log)
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

    workers = min(count, max(2, client.settings.max_in_flight))
    errors, every_listing_made = run_side_by_side(
        listings,
        walk,
        workers=workers,
        tally=tally,
        stopped=lambda: failed.is_set() or (cancelled is not None and cancelled.is_set()),
        thread_name_prefix=f"{obj.name}-listing",
    )
    if errors:
        # The failure itself, rather than the cancellations of its siblings it caused.
        raise next((e for e in errors if not isinstance(e, ExtractionCancelled)), errors[0])
    if not every_listing_made:
        stop_if_cancelled()  # set between two walks, it left listings unmade: not complete
    if obj.per_customer:
        check_not_all_skipped(client, obj, skipped, count)
    stats, _ = tally.snapshot(time.monotonic() - started)
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
