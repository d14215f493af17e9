"""Per-customer objects as the service serves them (contacts, payment sources, notes, tasks).

Proves, against the emulator, which answers these listings as the service does:
- only a 404 `Customer was not found` skips a customer's listing; any other 404 (`Request was
  not recognized`) fails the object with an error naming the path and what to check, its table
  keeps its last good copy, and the object's other listings stop instead of running to the end;
- every listing skipped while the customers exist is a failure, not an empty table;
- payment sources are complete (hidden ones too) and read one page per customer, since the
  service sends every source on every page; each keeps its `object` and its customer;
- an event's customer is read whether it is an id or the expanded object the service sends;
- contacts and tasks keep the API's `customer_id` column, and the customer reference check
  reads it.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from invoiced_assets import checks
from invoiced_assets.api import ListingStats
from invoiced_assets.api.errors import InvoicedNotFoundError
from invoiced_assets.assets import table_assets
from invoiced_assets.catalogue import CONTACTS, NOTES, PAYMENT_SOURCES, TASKS, get_object
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.emulator.server import ApiError
from invoiced_assets.extract.customers import check_not_all_skipped
from invoiced_assets.extract.incremental import event_customer, read_deletions
from invoiced_assets.extract.listings import ReadPlan
from invoiced_assets.extract.scheduling import extract_concurrently

from .conftest import API_KEY, fast_client, use_emulator
from .test_sync_job import query, run_sync


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.2, seed=61, api_key=API_KEY) as server:
        use_emulator(monkeypatch, server, tmp_path / "warehouse.duckdb")
        yield server


def answer_404(
    monkeypatch: pytest.MonkeyPatch, server: EmulatorServer, listing: str, message: Any
) -> list[str]:
    """Make the emulator answer 404 `message(path)` for `/customers/<id>/<listing>` (None: as
    usual); returns the paths asked for, in order."""
    route = server._route
    asked: list[str] = []

    def answered(method: str, target: str, headers: dict[str, str], key: str) -> Any:
        path = target.split("?")[0]
        if path.startswith("/customers/") and path.endswith(f"/{listing}"):
            asked.append(path)
            said = message(path)
            if said is not None:
                return ApiError(404, said).response()
        return route(method, target, headers, key)

    monkeypatch.setattr(server, "_route", answered)
    return asked


def step_failure(result: Any) -> str:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.error.message


def count(path: Path, table: str) -> int:
    return query(path, f"select count(*) from invoiced.{table}")[0][0]


def test_an_unknown_path_fails_the_object_and_keeps_its_table(
    account: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "warehouse.duckdb"
    assert run_sync(["customers", "contacts"]).success
    contacts = count(path, "contacts")
    assert contacts == len(account.records("contacts")) > 0
    asked = answer_404(
        monkeypatch, account, "contacts", lambda p: f"Request was not recognized: GET {p}"
    )

    result = run_sync(["customers", "contacts"])

    assert not result.success
    message = step_failure(result)
    assert "Request was not recognized: GET /customers/" in message
    assert "INVOICED_BASE_URL" in message and "contacts" in message
    assert count(path, "contacts") == contacts  # the last good copy
    # The other listings stopped before their next request, rather than asking every customer.
    customers = len(account.records("customers"))
    assert 1 <= len(asked) < customers / 4, (len(asked), customers)


def test_every_listing_skipped_while_customers_exist_is_a_failure(
    account: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "warehouse.duckdb"
    assert run_sync(["customers", "payment_sources"]).success
    sources = count(path, "payment_sources")
    answer_404(
        monkeypatch,
        account,
        "payment_sources",
        lambda p: f"Customer was not found: {p.split('/')[2]}",
    )

    result = run_sync(["customers", "payment_sources"])

    assert not result.success
    message = step_failure(result)
    assert "answered 404 Customer was not found" in message and "exists" in message
    assert count(path, "payment_sources") == sources


def test_a_customer_gone_during_the_read_is_skipped(
    account: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = account.records("payment_sources")
    gone = sources[0]["customer"]
    answer_404(
        monkeypatch,
        account,
        "payment_sources",
        lambda p: f"Customer was not found: {gone}" if p == f"/customers/{gone}/payment_sources" else None,
    )  # fmt: skip

    assert run_sync(["customers", "payment_sources"]).success

    stored = query(tmp_path / "warehouse.duckdb", "select id from invoiced.payment_sources")
    assert {i for (i,) in stored} == {s["id"] for s in sources if s["customer"] != gone}


def test_payment_sources_complete_one_page_per_customer(account: EmulatorServer) -> None:
    """With one record per page the service would still send every source on each page: a walk
    of the pages would read each customer's sources as many times as it has them."""
    client = fast_client(account.url, page_size=1)
    account.reset_stats()
    (extraction,) = extract_concurrently(
        client, [ReadPlan(PAYMENT_SOURCES, frozenset({"payment_sources"}))]
    )
    assert extraction.error is None, extraction.error
    frame = extraction.tables["payment_sources"].data.to_frame()
    sent = account.records("payment_sources")
    assert sorted(frame["id"]) == sorted(s["id"] for s in sent)  # none twice, none missing
    assert not all(s["chargeable"] for s in sent)  # hidden ones are among them
    by_id = {s["id"]: s for s in sent}
    for row in frame.to_dict("records"):
        assert row["object"] == by_id[row["id"]]["object"] in ("card", "bank_account")
        assert row["customer"] == by_id[row["id"]]["customer"]
    # One request per customer, beside the customers listing's pages (one record each).
    customers = len(account.records("customers"))
    assert extraction.customers_read is not None
    assert extraction.stats.requests - extraction.customers_read.requests == customers
    assert account.stats()["requests"] == extraction.stats.requests


def test_payment_sources_load_keeps_hidden_sources(account: EmulatorServer, tmp_path: Path) -> None:
    assert run_sync(["customers", "payment_sources"]).success
    rows = query(
        tmp_path / "warehouse.duckdb",
        "select id, object, customer, chargeable from invoiced.payment_sources",
    )
    sent = {s["id"]: s for s in account.records("payment_sources")}
    assert {r[0]: (r[1], r[2], r[3]) for r in rows} == {
        i: (s["object"], s["customer"], s["chargeable"]) for i, s in sent.items()
    }
    assert {r[1] for r in rows} == {"card", "bank_account"} and not all(r[3] for r in rows)


# The shapes of samples/events.*.json: the customer of data.object is the customer object.
EXPANDED_CUSTOMER = {"id": 876577, "object": "customer", "name": "abc", "number": "CUST-0087"}
EVENT_SUBJECTS: list[tuple[str, dict[str, Any]]] = [
    ("invoice", {"id": 1, "object": "invoice", "customer": EXPANDED_CUSTOMER}),
    ("contact", {"id": 2, "object": "contact", "customer_id": 876577, "customer": EXPANDED_CUSTOMER}),
    ("task", {"id": 3, "customer_id": 876577, "user_id": 1976, "customer": EXPANDED_CUSTOMER}),
    ("note", {"id": 4, "object": "note", "customer": EXPANDED_CUSTOMER, "invoice": None}),
    ("payment_source", {"id": 5, "object": "card", "customer_id": 876577, "customer": EXPANDED_CUSTOMER}),
    ("payment", {"id": 6, "object": "payment", "customer": 876577}),  # an id, as listings send
    ("payment", {"id": 7, "object": "payment", "customer": None}),
]  # fmt: skip


@pytest.mark.parametrize(("event_object", "subject"), EVENT_SUBJECTS)
def test_event_customer_is_an_id_or_an_expanded_object(
    event_object: str, subject: dict[str, Any]
) -> None:
    from invoiced_assets.extract.incremental import EVENT_OBJECTS

    expected = None if subject.get("customer") is None else 876577
    assert event_customer(EVENT_OBJECTS[event_object], subject) == expected


class _Events:
    """A client whose /events listing is one page of events (newest first)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def listing(self, endpoint: str, params: dict[str, Any]) -> Any:
        events = self.events

        class _Listing:
            stats = ListingStats(endpoint)

            def __iter__(self) -> Iterator[list[dict[str, Any]]]:
                yield events

        return _Listing()


def test_deletions_read_events_as_the_service_sends_them() -> None:
    events = [
        {"id": 100 - n, "type": f"{kind}.{action}", "data": {"object": subject}}
        for n, (kind, subject) in enumerate(EVENT_SUBJECTS)
        for action in ("deleted",)
    ]
    deletions = read_deletions(_Events(events), 0)  # type: ignore[arg-type]
    assert deletions.for_object(CONTACTS) == {2} and deletions.for_object(TASKS) == {3}
    assert deletions.for_object(PAYMENT_SOURCES) == {5}
    # A contact or payment source changed: its customer's listing is read again.
    assert deletions.customers_touched(CONTACTS) == {876577}
    assert deletions.customers_touched(PAYMENT_SOURCES) == {876577}
    assert deletions.for_object(get_object("payments")) == {6, 7}


def test_contacts_and_tasks_name_their_customer_customer_id(
    account: EmulatorServer, tmp_path: Path
) -> None:
    assert CONTACTS.customer_column == TASKS.customer_column == "customer_id"
    assert NOTES.customer_column == PAYMENT_SOURCES.customer_column == "customer"
    by_name = {t.table: t for t in table_assets()}
    for name in ("contacts", "tasks", "notes", "payment_sources"):
        assert checks.CUSTOMER_REFERENCES in by_name[name].check_names, name

    result = run_sync(["customers", "contacts", "tasks"])

    assert result.success
    evaluations = {
        (
            e.event_specific_data.asset_key.path[-1],
            e.event_specific_data.check_name,
        ): e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    for name in ("contacts", "tasks"):
        evaluation = evaluations[(name, checks.CUSTOMER_REFERENCES)]
        assert evaluation.passed, evaluation.metadata
        columns = [c for (c,) in query(
            tmp_path / "warehouse.duckdb",
            "select column_name from information_schema.columns"
            f" where table_schema = 'invoiced' and table_name = '{name}'",
        )]  # fmt: skip
        assert "customer_id" in columns and "customer" not in columns, columns
    sent = {c["id"]: c["customer_id"] for c in account.records("contacts")}
    stored = query(tmp_path / "warehouse.duckdb", "select id, customer_id from invoiced.contacts")
    assert dict(stored) == sent


def test_every_skip_is_believed_only_once_the_customers_are_gone(
    account: EmulatorServer,
) -> None:
    """A lone deleted customer among those looked up does not excuse the others."""
    client = fast_client(account.url)
    (gone,) = account.mutate("customers", delete=1)["deleted"]
    exists = account.records("customers")[0]["id"]
    check_not_all_skipped(client, PAYMENT_SOURCES, [gone], 1)  # gone indeed: no failure
    check_not_all_skipped(client, PAYMENT_SOURCES, [gone], 2)  # not every listing skipped
    with pytest.raises(InvoicedNotFoundError, match=f"yet customer {exists} exists"):
        check_not_all_skipped(client, PAYMENT_SOURCES, [gone, exists], 2)


def test_a_payment_source_event_names_its_customer_by_customer_id_too() -> None:
    subject = {"id": 5, "object": "card", "customer_id": 876577, "customer": None}
    assert event_customer(PAYMENT_SOURCES, subject) == 876577
