"""An object's listings are made only as threads free up, none after a failure, and their
figures are summed as each ends: what keeps 10,000 per-customer listings from being held at once.

Fake listings and events only: nothing here depends on the machine's speed.
"""

import threading
from typing import Any

from invoiced_assets.api import Listing, ListingStats
from invoiced_assets.extract.side_by_side import (
    QUEUED_PER_WORKER,
    ListingsTally,
    run_side_by_side,
)


class FakeListing(Listing):
    def __init__(self, number: int, **stats: Any) -> None:
        self.number = number
        self.stats = ListingStats(listing="/customers/{id}/contacts", **stats)


def test_listings_are_made_as_threads_free_up_not_all_at_once() -> None:
    workers, count = 3, 200
    ended = 0
    ended_lock = threading.Lock()
    held: list[int] = []  # listings made and not yet ended, each time one is made

    def made():
        for number in range(count):
            with ended_lock:
                held.append(number + 1 - ended)
            yield FakeListing(number, pages=1, records=2, requests=1, total_count=2), {}

    def walk(listing: Listing, extra: dict[str, Any]) -> None:
        nonlocal ended
        with ended_lock:
            ended += 1

    tally = ListingsTally("/customers/{id}/contacts")
    errors, every_listing_made = run_side_by_side(
        made(), walk, workers=workers, tally=tally, stopped=lambda: False, thread_name_prefix="t"
    )
    assert errors == [] and every_listing_made and ended == count
    assert not tally._live  # each listing let go as it ended
    assert max(held) <= workers * (1 + QUEUED_PER_WORKER)
    stats, started = tally.snapshot(1.0)
    assert (stats.pages, stats.records, stats.requests, stats.total_count) == (200, 400, 200, 400)
    assert started == count


def test_no_listing_is_made_after_one_failed() -> None:
    workers = 2
    room = workers * (1 + QUEUED_PER_WORKER)
    made_count = 0
    failed, all_room_taken = threading.Event(), threading.Event()

    def made():
        nonlocal made_count
        for number in range(1_000):
            made_count += 1
            if made_count == room:
                all_room_taken.set()
            yield FakeListing(number), {}

    def walk(listing: Listing, extra: dict[str, Any]) -> None:
        if listing.number == 0:
            all_room_taken.wait()
            failed.set()
            raise RuntimeError("403 Forbidden")
        failed.wait()  # the others are under way, or queued, when the first one fails

    errors, every_listing_made = run_side_by_side(
        made(),
        walk,
        workers=workers,
        tally=ListingsTally("/x"),
        stopped=failed.is_set,
        thread_name_prefix="t",
    )
    assert [str(error) for error in errors] == ["403 Forbidden"] and not every_listing_made
    # Those already made when it failed, and not one more.
    assert made_count == room


def test_one_listing_is_walked_in_the_callers_thread() -> None:
    threads: list[threading.Thread] = []

    def walk(listing: Listing, extra: dict[str, Any]) -> None:
        threads.append(threading.current_thread())
        raise ValueError("bad page")

    errors, _ = run_side_by_side(
        [(FakeListing(0), {})],
        walk,
        workers=1,
        tally=ListingsTally("/x"),
        stopped=lambda: False,
        thread_name_prefix="t",
    )
    assert threads == [threading.current_thread()]
    assert [type(error) for error in errors] == [ValueError]


def test_the_tally_counts_listings_under_way_and_ignores_deleted_customers_counts() -> None:
    tally = ListingsTally("/customers/{id}/payment_sources")
    ended = FakeListing(0, pages=1, records=3, requests=2, retries=1, total_count=3)
    deleted = FakeListing(1, requests=1)  # 404: no page, no X-Total-Count
    live = FakeListing(2, pages=1, records=1, requests=1, total_count=1)
    for listing in (ended, deleted, live):
        tally.begin(listing)
    tally.end(ended)
    tally.end(deleted)
    stats, started = tally.snapshot(2.0)
    assert (stats.records, stats.requests, stats.retries, stats.total_count) == (4, 4, 1, 4)
    assert started == 2 and stats.elapsed_seconds == 2.0
    unknown = FakeListing(3, pages=1, records=1, requests=1, total_count=None)
    tally.begin(unknown)
    tally.end(unknown)
    assert tally.snapshot(2.0)[0].total_count is None  # one listing sent no count: none is known


def test_a_listing_that_cannot_be_made_stops_those_queued() -> None:
    started: list[int] = []
    third_let_go = threading.Event()

    class Tally(ListingsTally):
        def end(self, listing: Listing) -> None:
            super().end(listing)
            if listing.number == 2:  # type: ignore[attr-defined]
                third_let_go.set()

    def made():
        for number in range(3):
            yield FakeListing(number), {}
        raise KeyError("contacts")  # e.g. the catalogue has no such object

    def walk(listing: Listing, extra: dict[str, Any]) -> None:
        started.append(listing.number)  # type: ignore[attr-defined]
        # The two under way end only once the third, queued, is let go without being walked
        # (if it were walked instead, it would be once one of them gave up waiting).
        third_let_go.wait(timeout=10)

    tally = Tally("/x")
    try:
        run_side_by_side(
            made(), walk, workers=2, tally=tally, stopped=lambda: False, thread_name_prefix="t"
        )
    except KeyError:
        pass
    else:
        raise AssertionError("the error making a listing was not raised")
    assert sorted(started) == [0, 1] and not tally._live
