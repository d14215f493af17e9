"""Read several Invoiced listings at once and shape them into tables, as each one completes.

Measured on 2 cores (see benchmarks/full_load.py): one Dagster step per listing pays a process
start and the dagster/pandas import per step, and the default executor runs only as many steps as
there are CPUs; threads in one step overlap every listing's network waits. Pages of one listing
stay strictly in order (the service refuses or duplicates out-of-order pages); listings run side
by side, all within the client's process-wide cap on requests in flight.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from invoiced_assets.api_errors import InvoicedAuthenticationError, InvoicedError
from invoiced_assets.catalogue import InvoicedObject
from invoiced_assets.invoiced_api import InvoicedClient, ListingStats
from invoiced_assets.shaping import ObjectShaper, ShapedTable

PROGRESS_LOG_INTERVAL_SECONDS = 10.0
_default_log = logging.getLogger(__name__).info


class ExtractionCancelled(Exception):
    """Another listing failed in a way that dooms this one (e.g. the key was rejected)."""


@dataclass
class Extraction:
    """The outcome of reading one object: its shaped tables, or the error that stopped it."""

    obj: InvoicedObject
    stats: ListingStats
    tables: dict[str, ShapedTable] | None = None
    ids: set | None = None  # every primary key read, for reference checks
    error: BaseException | None = None


def extract_object(
    client: InvoicedClient,
    obj: InvoicedObject,
    tables: Iterable[str],
    *,
    cancelled: threading.Event | None = None,
    log: Callable[[str], None] = _default_log,
    progress_interval_seconds: float | None = None,
) -> Extraction:
    """Walk one object's complete listing, shaping each page as it arrives.

    Then ask the listing's X-Total-Count once more, so the row-count check can allow for
    records created or deleted during the walk.
    """
    listing = client.object_listing(obj.name)
    shaper = ObjectShaper(obj, tables)
    if progress_interval_seconds is None:
        progress_interval_seconds = PROGRESS_LOG_INTERVAL_SECONDS
    started = last_log = time.monotonic()
    for page in listing:
        if cancelled is not None and cancelled.is_set():
            raise ExtractionCancelled(f"{obj.name}: stopped because another listing failed")
        shaper.add_page(page)
        now = time.monotonic()
        if now - last_log >= progress_interval_seconds:
            last_log = now
            log(_progress_line(obj.name, listing.stats, client.settings.page_size, now - started))
    listing.count_now()
    return Extraction(obj, listing.stats, tables=shaper.finish(), ids=shaper.ids)


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


def extract_concurrently(
    client: InvoicedClient,
    wanted: dict[InvoicedObject, set[str]],
    *,
    log: Callable[[str], None] = _default_log,
) -> Iterator[Extraction]:
    """Read every wanted object side by side; yield each one as soon as it is complete.

    A failed object is yielded with its error, after which the others continue (their tables are
    still worth writing), except when the key is rejected: then the rest stop early.
    """
    if not wanted:
        return
    cancelled = threading.Event()
    with ThreadPoolExecutor(max_workers=len(wanted), thread_name_prefix="invoiced-listing") as pool:
        futures: dict[Future, InvoicedObject] = {
            pool.submit(extract_object, client, obj, tables, cancelled=cancelled, log=log): obj
            for obj, tables in wanted.items()
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                obj = futures[future]
                try:
                    yield future.result()
                except (InvoicedError, ExtractionCancelled, OSError, ValueError) as exc:
                    if isinstance(exc, InvoicedAuthenticationError):
                        cancelled.set()
                    yield Extraction(obj, ListingStats(obj.endpoint), error=exc)
