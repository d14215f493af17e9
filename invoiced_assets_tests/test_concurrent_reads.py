"""Objects are read side by side while the API is slow, one at a time while it is fast, and stop
together.

Proves:
- A fast API is read one object at a time, customers first, and a slow one side by side, with
  the same rows either way. Objects start while the consumer is busy with the last one.
- The client says how long its oldest request has waited (on a fake clock).
- A rejected key starts no other object. A consumer that stops early (the step failed, or the
  run was terminated) stops every listing before its next request: once the generator is
  closed, every listing thread has ended and no request follows. A cancellation between two
  per-customer listings, with none under way, still fails the object rather than leaving the
  listings not yet made out of it.
"""

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from invoiced_assets.api import ClientSettings, InvoicedClient, RetryPolicy
from invoiced_assets.api import client as api_client
from invoiced_assets.api.errors import InvoicedAuthenticationError
from invoiced_assets.catalogue import get_object
from invoiced_assets.emulator import EmulatorServer, FaultConfig
from invoiced_assets.extract import listings, pace
from invoiced_assets.extract.customers import CustomerIds
from invoiced_assets.extract.listings import ReadPlan
from invoiced_assets.extract.scheduling import extract_concurrently

from .conftest import API_KEY, hold_answers


def client_for(url: str, key: str = API_KEY) -> InvoicedClient:
    retry = RetryPolicy(max_retries=1, backoff_initial_seconds=0.001, backoff_max_seconds=0.01)
    return InvoicedClient(ClientSettings(api_key=key, base_url=url, retry=retry))


def plans_for(*names: str) -> list[ReadPlan]:
    return [ReadPlan(get_object(name), frozenset({name})) for name in names]


def test_a_consumer_that_stops_early_stops_every_listing() -> None:
    names = ("plans", "invoices", "events")  # one page or two, then 50 and 160
    with EmulatorServer(
        scale=1, seed=4, api_key=API_KEY, faults=FaultConfig(latency_ms=20)
    ) as slow:
        full_read_pages = sum(-(-slow.truth()[name] // 100) for name in names)
        extractions: Iterator[listings.Extraction] = extract_concurrently(
            client_for(slow.url), plans_for(*names), log=lambda line: None
        )
        first = next(extractions)
        assert first.error is None
        extractions.close()  # the step stopped (failed, or the run was terminated)
        # Closing returns once every listing thread has ended: nothing can send a request now.
        readers = ("invoiced-listing", "invoiced-objects")
        assert not [t for t in threading.enumerate() if t.name.startswith(readers)]
        requests = slow.stats()["requests"]
    # The listings stopped at their next page rather than reading to the end.
    assert requests < full_read_pages / 4, (requests, full_read_pages)


class ObjectsAtOnce:
    """Counts how many objects are read at the same time, and in which order they start."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.running: list[str] = []
        self.started: list[str] = []
        self.most = 0
        self._lock = threading.Lock()
        original = listings.extract_object

        def counting(client: InvoicedClient, plan: ReadPlan, **kwargs: Any) -> Any:
            with self._lock:
                self.running.append(plan.obj.name)
                self.started.append(plan.obj.name)
                self.most = max(self.most, len(self.running))
            try:
                return original(client, plan, **kwargs)
            finally:
                with self._lock:
                    self.running.remove(plan.obj.name)

        monkeypatch.setattr(listings, "extract_object", counting)


# Contacts are listed per customer: read before the customers, they would wait forever.
OBJECTS = ("contacts", "invoices", "customers", "payments", "estimates")


def row_counts(extractions: list[listings.Extraction]) -> dict[str, int]:
    assert all(e.error is None for e in extractions)
    return {name: t.row_count for e in extractions for name, t in (e.tables or {}).items()}


def test_a_fast_api_is_read_one_object_at_a_time_customers_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with EmulatorServer(scale=0.1, seed=4, api_key=API_KEY) as emulator:
        at_once = ObjectsAtOnce(monkeypatch)
        # Fast: no request waits a whole second on the API in the test's own emulator.
        monkeypatch.setattr(pace, "FAST_ROUND_TRIP_SECONDS", 1.0)
        fast = list(extract_concurrently(client_for(emulator.url), plans_for(*OBJECTS)))
        assert at_once.most == 1 and at_once.started[0] == "customers"
        at_once.most = 0
        # Slow: every request waits longer than that.
        monkeypatch.setattr(pace, "FAST_ROUND_TRIP_SECONDS", 0.0)
        slow = list(extract_concurrently(client_for(emulator.url), plans_for(*OBJECTS)))
        assert at_once.most > 1
    assert row_counts(fast) == row_counts(slow)


def test_a_slow_api_has_its_objects_read_side_by_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with EmulatorServer(scale=0.1, seed=4, api_key=API_KEY, faults=FaultConfig()) as emulator:
        at_once = ObjectsAtOnce(monkeypatch)
        client = client_for(emulator.url)
        extractions = list(extract_concurrently(client, plans_for("customers")))
        emulator.set_faults(FaultConfig(latency_ms=40))  # slower than FAST_ROUND_TRIP_SECONDS
        extractions += extract_concurrently(client, plans_for(*OBJECTS[:2], *OBJECTS[3:]))
        assert at_once.most > 1
    assert row_counts(extractions)


def test_the_client_says_how_long_its_oldest_request_has_waited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a fake clock, with the answer held until the test releases it: no timing."""
    clock = [100.0]
    monkeypatch.setattr(
        api_client, "time", SimpleNamespace(monotonic=lambda: clock[0], sleep=time.sleep)
    )
    with EmulatorServer(scale=0.05, seed=4, api_key=API_KEY, faults=FaultConfig()) as emulator:
        arrived, release = hold_answers(monkeypatch, emulator)
        client = client_for(emulator.url)
        assert client.waiting_seconds() == 0.0
        thread = threading.Thread(target=client.get, args=("/customers", {"per_page": 1}))
        thread.start()
        assert arrived.wait(30)  # the request is in progress, its start read at 100.0
        clock[0] = 107.5
        assert client.waiting_seconds() == 7.5
        release.set()
        thread.join()
        assert client.waiting_seconds() == 0.0


def test_a_rejected_key_starts_no_other_object(monkeypatch: pytest.MonkeyPatch) -> None:
    with EmulatorServer(scale=0.1, seed=4, api_key=API_KEY) as emulator:
        monkeypatch.setattr(pace, "FAST_ROUND_TRIP_SECONDS", 1.0)  # one at a time
        client = client_for(emulator.url, key="wrong-key")
        extractions = list(extract_concurrently(client, plans_for(*OBJECTS)))
        assert emulator.stats()["requests"] == 1
    errors = {e.obj.name: e.error for e in extractions}
    assert isinstance(errors.pop("customers"), InvoicedAuthenticationError)
    assert len(errors) == len(OBJECTS) - 1
    assert all(isinstance(e, listings.ExtractionCancelled) for e in errors.values())


def test_objects_start_while_the_consumer_is_busy_with_the_last_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The step writes a table while the next objects are read, in threads as in a child."""
    with EmulatorServer(scale=0.1, seed=4, api_key=API_KEY) as emulator:
        at_once = ObjectsAtOnce(monkeypatch)
        monkeypatch.setattr(pace, "FAST_ROUND_TRIP_SECONDS", 1.0)  # one at a time
        extractions = extract_concurrently(client_for(emulator.url), plans_for(*OBJECTS))
        first = next(extractions)
        deadline = time.monotonic() + 10
        while len(at_once.started) < len(OBJECTS) and time.monotonic() < deadline:
            time.sleep(0.05)  # the step, writing the first object's tables
        assert at_once.started == ["customers", "invoices", "payments", "estimates", "contacts"]
        assert at_once.most == 1
        rest = list(extractions)
    assert row_counts([first, *rest])


def test_a_cancellation_between_listings_is_not_taken_for_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cancelled = threading.Event()
    original = listings.run_side_by_side

    def cancelled_after_three_walks(made: Any, walk: Any, *, stopped: Any, **kwargs: Any) -> Any:
        ended, asked = threading.Semaphore(0), 0

        def counted_walk(*args: Any) -> None:
            try:
                walk(*args)
            finally:
                ended.release()

        def stop() -> bool:
            nonlocal asked
            asked += 1
            if asked == 4:  # three listings made: once their walks end, the run is cancelled
                for _ in range(3):
                    assert ended.acquire(timeout=60)
                cancelled.set()
            return stopped()

        return original(made, counted_walk, stopped=stop, **kwargs)

    monkeypatch.setattr(listings, "run_side_by_side", cancelled_after_three_walks)
    with EmulatorServer(scale=0.2, seed=4, api_key=API_KEY) as server:
        client = client_for(server.url)
        customers = CustomerIds(client, from_customers_read=False)
        assert server.truth()["customers"] > 10
        with pytest.raises(listings.ExtractionCancelled):
            listings.extract_object(
                client, plans_for("contacts")[0], cancelled=cancelled, customers=customers
            )
