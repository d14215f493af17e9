"""An object's listings run side by side, started as slots free up, their figures summed.

An object can have thousands of listings (one per customer for contacts and payment sources).
They are made and started a few at a time, as earlier ones finish, and each one's figures are
folded into the object's as it ends: memory stays the same whatever the number of customers
(made all at once, 10,000 listings held about 15 MB until the object ended), and after a failure
no further listing is even made.
"""

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from invoiced_assets.api import Listing, ListingStats

# How many listings wait for a free thread, per thread: enough that a thread never idles while
# the next listing is made, few enough that they cost nothing.
QUEUED_PER_WORKER = 2
_COUNTED = ("pages", "records", "requests", "retries", "rate_limited", "bytes_received")


class ListingsTally:
    """The summed figures of an object's listings: those that ended and those under way."""

    def __init__(self, name: str) -> None:
        self._total = ListingStats(listing=name)
        self._total.total_count = 0
        self._live: set[Listing] = set()
        self._started = 0  # listings that answered a page
        self._lock = threading.Lock()

    def begin(self, listing: Listing) -> None:
        with self._lock:
            self._live.add(listing)

    def end(self, listing: Listing) -> None:
        with self._lock:
            self._live.discard(listing)
            _fold(self._total, listing.stats)
            self._started += 1 if listing.stats.pages else 0

    def snapshot(self, elapsed: float) -> tuple[ListingStats, int]:
        """The figures so far (every listing ended or under way), and how many answered."""
        with self._lock:
            stats = dataclasses.replace(self._total)
            for listing in self._live:
                _fold(stats, listing.stats)
            started = self._started + sum(1 for listing in self._live if listing.stats.pages)
        stats.elapsed_seconds = elapsed
        return stats, started


def _fold(total: ListingStats, stats: ListingStats) -> None:
    for attribute in _COUNTED:
        setattr(total, attribute, getattr(total, attribute) + getattr(stats, attribute))
    # A listing with no page answered is one of a deleted customer (404): it counts nothing.
    if stats.pages:
        known = total.total_count is not None and stats.total_count is not None
        total.total_count = total.total_count + stats.total_count if known else None  # type: ignore[operator]


def run_side_by_side(
    listings: Iterable[tuple[Listing, dict[str, Any]]],
    walk: Callable[[Listing, dict[str, Any]], None],
    *,
    workers: int,
    tally: ListingsTally,
    stopped: Callable[[], bool],
    thread_name_prefix: str,
) -> tuple[list[BaseException], bool]:
    """Walk every listing on `workers` threads, making each only when a thread is nearly free.

    No listing is made once `stopped()` says so (a sibling failed, or the run was cancelled).
    Returns the errors the walks raised, and whether every listing was made.
    """
    errors: list[BaseException] = []
    if workers <= 1:  # one listing (or none): walked in the caller's thread
        for listing, extra in listings:
            tally.begin(listing)
            try:
                walk(listing, extra)
            except BaseException as error:
                errors.append(error)
                return errors, False
            finally:
                tally.end(listing)
        return errors, True
    queued = threading.BoundedSemaphore(workers * (1 + QUEUED_PER_WORKER))

    def walked(listing: Listing, future: Future) -> None:
        try:
            if not future.cancelled() and (error := future.exception()) is not None:
                errors.append(error)
            tally.end(listing)
        finally:
            queued.release()  # whatever happened, or the next listing would wait for ever

    made: Iterator[tuple[Listing, dict[str, Any]]] = iter(listings)
    every_listing_made = False
    with ThreadPoolExecutor(workers, thread_name_prefix=thread_name_prefix) as pool:
        try:
            while True:
                queued.acquire()
                if stopped():
                    break
                item = next(made, None)
                if item is None:
                    every_listing_made = True
                    break
                listing, extra = item
                tally.begin(listing)
                future = pool.submit(walk, listing, extra)
                future.add_done_callback(lambda f, listing=listing: walked(listing, f))
        except BaseException:
            # Making a listing failed: those queued are not started (those under way end).
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return errors, every_listing_made  # read once every walk has ended
