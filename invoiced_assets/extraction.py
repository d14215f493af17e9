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
"""

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from invoiced_assets.api_errors import InvoicedAuthenticationError, InvoicedError
from invoiced_assets.catalogue import InvoicedObject
from invoiced_assets.invoiced_api import InvoicedClient, Listing, ListingStats
from invoiced_assets.shaping import ObjectShaper, ShapedTable

PROGRESS_LOG_INTERVAL_SECONDS = 10.0
# A listing of more pages than this is split into date windows of about this many pages.
PAGES_PER_WINDOW = 25
MAX_WINDOWS = 32
# Splitting pays when pages wait on the network; when the API answers faster than this the read
# is CPU-bound, and more threads only add overhead (measured: +10 % CPU at 0 ms latency).
WINDOW_MIN_ROUND_TRIP_SECONDS = 0.02
_default_log = logging.getLogger(__name__).info


class ExtractionCancelled(Exception):
    """Another listing failed in a way that dooms this one (e.g. the key was rejected)."""


@dataclass(frozen=True)
class ReadPlan:
    """What to read of one object: every record, or those updated after a cursor."""

    obj: InvoicedObject
    tables: frozenset[str] = field(default_factory=frozenset)
    updated_after: int | None = None  # None: a full read


@dataclass
class Extraction:
    """The outcome of reading one object: its shaped tables, or the error that stopped it."""

    plan: ReadPlan
    stats: ListingStats
    tables: dict[str, ShapedTable] | None = None
    ids: set | None = None  # every primary key read, for reference checks
    max_updated_at: int | None = None  # the newest updated_at read (the incremental cursor)
    error: BaseException | None = None

    @property
    def obj(self) -> InvoicedObject:
        return self.plan.obj


Window = tuple[int | None, int | None]


def date_windows(
    client: InvoicedClient, obj: InvoicedObject, params: Mapping[str, Any], stats: ListingStats
) -> list[Window]:
    """Contiguous, non-overlapping `date` windows covering the whole listing (one if short).

    One-record requests for the earliest and the latest `date` size the windows (counted in
    `stats`). The first window has no start and the last no end, so no date is left out.
    """
    if not obj.date_filterable:
        return [(None, None)]
    started = time.monotonic()
    earliest = client.get(obj.endpoint, {**params, "sort": "date asc", "per_page": 1})
    round_trip = time.monotonic() - started
    stats.requests += earliest.attempts
    total = earliest.response.headers.get("X-Total-Count", "")
    pages = math.ceil(int(total) / client.settings.page_size) if total.isdigit() else 0
    count = min(MAX_WINDOWS, pages // PAGES_PER_WINDOW)
    if count < 2 or not earliest.body or round_trip < WINDOW_MIN_ROUND_TRIP_SECONDS:
        return [(None, None)]
    latest = client.get(obj.endpoint, {**params, "sort": "date desc", "per_page": 1})
    stats.requests += latest.attempts
    first, last = earliest.body[0].get("date"), (latest.body or [{}])[0].get("date")
    if not isinstance(first, int) or not isinstance(last, int) or last - first < count:
        return [(None, None)]
    bounds = [first + (last - first) * i // count for i in range(1, count)]
    starts: list[int | None] = [None, *bounds]
    ends: list[int | None] = [*(b - 1 for b in bounds), None]
    return list(zip(starts, ends, strict=True))


def _merge_stats(name: str, listings: list[Listing], elapsed: float) -> ListingStats:
    merged = ListingStats(listing=name, elapsed_seconds=elapsed)
    totals = [listing.stats.total_count for listing in listings]
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
        self._log(_progress_line(self._name, stats, self._page_size, now - self._started))


def _progress_line(name: str, stats: ListingStats, page_size: int, elapsed: float) -> str:
    rate = stats.records / elapsed if elapsed > 0 else 0.0
    line = f"{name}: page {stats.pages}"
    if stats.total_count is not None:
        pages_total = max(1, -(-stats.total_count // page_size))
        left = max(0, stats.total_count - stats.records)
        eta = f", about {left / rate:.0f}s left" if rate else ""
        line += f" of {pages_total}, {stats.records}/{stats.total_count} records{eta}"
    else:
        line += f", {stats.records} records"
    return line + f" ({rate:.0f} records/s)"


def extract_object(
    client: InvoicedClient,
    plan: ReadPlan,
    *,
    cancelled: threading.Event | None = None,
    log: Callable[[str], None] = _default_log,
) -> Extraction:
    """Read one object (its date windows side by side), shaping each page as it arrives.

    Then ask the complete listing's X-Total-Count once more, so the row-count check can allow
    for records created or deleted during the read.
    """
    obj = plan.obj
    started = time.monotonic()
    base = client.object_listing(obj.name, updated_after=plan.updated_after)
    planning = ListingStats(obj.endpoint)
    windows = date_windows(client, obj, base.params, planning)
    listings = [
        client.object_listing(
            obj.name, updated_after=plan.updated_after, start_date=start, end_date=end
        )
        for start, end in windows
    ]
    shaper = ObjectShaper(obj, plan.tables)
    shaper_lock = threading.Lock()
    progress = _Progress(obj.name, listings, client.settings.page_size, log)

    def walk(listing: Listing) -> None:
        for page in listing:
            if cancelled is not None and cancelled.is_set():
                raise ExtractionCancelled(f"{obj.name}: stopped because another listing failed")
            with shaper_lock:
                shaper.add_page(page)
            progress.tick()

    if len(listings) == 1:
        walk(listings[0])
    else:
        with ThreadPoolExecutor(len(listings), thread_name_prefix=f"{obj.name}-window") as pool:
            for future in [pool.submit(walk, listing) for listing in listings]:
                future.result()
    stats = _merge_stats(obj.endpoint, listings, time.monotonic() - started)
    complete = client.object_listing(obj.name)  # the whole listing, whatever was read
    stats.total_count_after = complete.count_now()
    stats.requests += complete.stats.requests + planning.requests
    return Extraction(
        plan,
        stats,
        tables=shaper.finish(),
        ids=shaper.ids,
        max_updated_at=shaper.max_updated_at,
    )


def extract_concurrently(
    client: InvoicedClient,
    plans: Iterable[ReadPlan],
    *,
    log: Callable[[str], None] = _default_log,
) -> Iterator[Extraction]:
    """Read every planned object side by side; yield each one as soon as it is complete.

    A failed object is yielded with its error, after which the others continue (their tables are
    still worth writing), except when the key is rejected: then the rest stop early.
    """
    plans = list(plans)
    if not plans:
        return
    cancelled = threading.Event()
    with ThreadPoolExecutor(max_workers=len(plans), thread_name_prefix="invoiced-listing") as pool:
        futures: dict[Future, ReadPlan] = {
            pool.submit(extract_object, client, plan, cancelled=cancelled, log=log): plan
            for plan in plans
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                plan = futures[future]
                try:
                    yield future.result()
                except (InvoicedError, ExtractionCancelled, OSError, ValueError) as exc:
                    if isinstance(exc, InvoicedAuthenticationError):
                        cancelled.set()
                    yield Extraction(plan, ListingStats(plan.obj.endpoint), error=exc)
