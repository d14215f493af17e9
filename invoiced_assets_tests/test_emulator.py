"""The Invoiced emulator behaves like the service described in /work/shared/invoiced-api.

These tests talk to the emulator over HTTP with plain `requests` (not the project's client) and
prove: Basic auth; pagination (`Link`, `X-Total-Count`, `per_page` clamping and omission);
walking `next` returns every id exactly once; the server-side cursor refuses an un-walked page
at offset 10,000 while a sequential walk passes it; hidden subscriptions; `include=applied_to`;
strict `updated_after`; inclusive `start_date`/`end_date`, whose windows split a listing and
follow rows changed during a walk; strict parameters on customers; that
every fault kind and the concurrency cap actually happen; that mutations change the ground truth
and leave events (deletions, `transaction.*`); that records are shaped like the samples and
consistent; that data is deterministic; and that the CLI starts, serves and stops on SIGTERM.

For the listings added later: plans and items hide archived rows unless `archived=1`; the
catalog's string ids page by cursor and ignore `updated_after`; contacts (with `customer_id`) and
payment sources are listed per customer and add up to the truth; and the original listings keep
their bytes.

Per-customer and per-invoice listings answer as the service does: contacts, notes and tasks of a
missing customer (and notes of a missing invoice) are `200 []`, payment sources of a missing
customer a 404 distinct from an unknown path's; a customer's notes are its own, newest first
whatever `sort` says; payment sources that cannot be charged are hidden unless
`include_hidden=1`, and every page holds every source. Deleting a customer (an invoice) deletes
its children without events. Payment sources have events, and every event but a customer's
carries its customer expanded, as it was when the event was recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from invoiced_assets.emulator import LISTINGS, Dataset, EmulatorServer, FaultConfig

from .conftest import hold_answers

KEY = "emulator-key"
SAMPLES = Path("/work/shared/invoiced-api/samples")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    """A read-only account at scale 0.1 (100 customers, 500 invoices)."""
    with EmulatorServer(scale=0.1, seed=1) as emulator:
        yield emulator


@pytest.fixture
def scratch() -> Iterator[EmulatorServer]:
    """A tiny account that a test may mutate or misconfigure."""
    with EmulatorServer(scale=0.05, seed=3) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def session() -> requests.Session:
    http = requests.Session()
    http.auth = (KEY, "")
    return http


def get(http: requests.Session, emulator: EmulatorServer, path: str, **params: Any) -> Any:
    return http.get(emulator.url + path, params=params, timeout=30)


def walk(http: requests.Session, url: str) -> tuple[list[dict[str, Any]], int]:
    """Follow `next` links from `url`; return every record and the number of pages."""
    records: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        response = http.get(next_url, timeout=30)
        assert response.status_code == 200, (next_url, response.text)
        records += response.json()
        pages += 1
        next_url = response.links.get("next", {}).get("url")
    return records, pages


def split_link(url: str) -> tuple[str, dict[str, str]]:
    """(absolute URL without query, query parameters) of a Link URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", dict(parse_qsl(parts.query))


# ------------------------------------------------------------------------------------------
# Authentication, routing
# ------------------------------------------------------------------------------------------


def test_requests_need_the_api_key_as_basic_user(server: EmulatorServer) -> None:
    for auth in (None, ("wrong-key", ""), ("", KEY)):
        response = requests.get(server.url + "/customers", auth=auth, timeout=10)
        assert response.status_code == 401
        assert response.json()["type"] == "invalid_request"
        assert response.json()["message"]
    assert requests.get(server.url + "/customers", auth=(KEY, ""), timeout=10).status_code == 200


def test_retrieve_one_record_and_404s(server: EmulatorServer, session: requests.Session) -> None:
    invoice = server.records("invoices")[0]
    assert get(session, server, f"/invoices/{invoice['id']}").json() == invoice
    missing = get(session, server, "/invoices/1")
    assert missing.status_code == 404
    assert missing.json() == {"type": "invalid_request", "message": "Invoice was not found: 1"}
    assert get(session, server, "/no_such_listing").status_code == 404


# ------------------------------------------------------------------------------------------
# Pagination
# ------------------------------------------------------------------------------------------


def test_link_header_and_total_count(server: EmulatorServer, session: requests.Session) -> None:
    response = get(session, server, "/customers", per_page=30, page=2)
    assert response.headers["X-Total-Count"] == "100"
    assert response.text.startswith("[") and len(response.json()) == 30
    links = {rel: split_link(link["url"]) for rel, link in response.links.items()}
    base = server.url + "/customers"
    assert links == {
        "self": (base, {"per_page": "30", "page": "2"}),
        "first": (base, {"per_page": "30", "page": "1"}),
        "previous": (base, {"per_page": "30", "page": "1"}),
        "next": (base, {"per_page": "30", "page": "3"}),
        "last": (base, {"per_page": "30", "page": "4"}),
    }
    first = get(session, server, "/customers", per_page=30)
    assert "previous" not in first.links
    last = get(session, server, "/customers", per_page=30, page=4)
    assert len(last.json()) == 10 and "next" not in last.links


def test_per_page_is_clamped_and_omitted_when_default(
    server: EmulatorServer, session: requests.Session
) -> None:
    clamped = get(session, server, "/invoices", per_page=500)
    assert len(clamped.json()) == 100
    assert "per_page" not in clamped.headers["Link"]
    assert len(get(session, server, "/invoices", per_page=-5).json()) == 1
    assert len(get(session, server, "/invoices", per_page=0).json()) == 100
    # Other parameters are kept in the links.
    filtered = get(session, server, "/invoices", **{"filter[status]": "paid", "per_page": 100})
    assert "filter%5Bstatus%5D=paid" in filtered.links["self"]["url"]
    assert "per_page" not in filtered.links["self"]["url"]


def test_walking_next_returns_every_id_once(
    server: EmulatorServer, session: requests.Session
) -> None:
    records, pages = walk(session, server.url + "/invoices?per_page=7")
    ids = [record["id"] for record in records]
    assert ids == [record["id"] for record in server.records("invoices")]
    assert pages == -(-500 // 7)
    events, _ = walk(session, server.url + "/events?per_page=100")
    event_ids = [event["id"] for event in events]
    assert event_ids == sorted(event_ids, reverse=True)  # newest first
    assert len(set(event_ids)) == server.truth()["events"]


def test_offset_10000_needs_the_preceding_pages(session: requests.Session) -> None:
    with EmulatorServer(scale=2.2, seed=1) as big:
        assert big.truth()["invoices"] == 11_000
        jump = get(session, big, "/invoices", page=101)
        assert jump.status_code == 400
        assert jump.json() == {
            "type": "invalid_request",
            "message": "You must retrieve all preceding page numbers before retrieving this page.",
        }
        assert get(session, big, "/invoices", page=100).status_code == 200  # offset 9,900
        records, pages = walk(session, big.url + "/invoices")
        assert pages == 110
        assert len({record["id"] for record in records}) == 11_000
        # Sorting on another field pages by offset: no refusal.
        assert get(session, big, "/invoices", page=101, sort="updated_at asc").status_code == 200


def test_total_count_is_cached_after_page_one(scratch: EmulatorServer) -> None:
    http = requests.Session()
    http.auth = (KEY, "")
    first = get(http, scratch, "/invoices", per_page=10)
    total = int(first.headers["X-Total-Count"])
    scratch.mutate("invoices", insert=5)
    second = http.get(first.links["next"]["url"], timeout=10)
    assert second.headers["X-Total-Count"] == str(total)  # cached for the walk
    assert get(http, scratch, "/invoices", per_page=10).headers["X-Total-Count"] == str(total + 5)


def test_sort_orders_by_offset(server: EmulatorServer, session: requests.Session) -> None:
    records, _ = walk(session, server.url + "/invoices?sort=updated_at+asc&per_page=50")
    stamps = [record["updated_at"] for record in records]
    assert stamps == sorted(stamps) and len(records) == 500


# ------------------------------------------------------------------------------------------
# Listing parameters
# ------------------------------------------------------------------------------------------


def test_subscriptions_hide_canceled_and_finished(
    server: EmulatorServer, session: requests.Session
) -> None:
    truth = server.records("subscriptions")
    hidden = {"canceled", "finished"}
    default, _ = walk(session, server.url + "/subscriptions")
    assert {record["id"] for record in default} == {
        record["id"] for record in truth if record["status"] not in hidden
    }
    everything, _ = walk(session, server.url + "/subscriptions?all=1")
    assert len(everything) == len(truth) == server.truth()["subscriptions"]
    canceled, _ = walk(session, server.url + "/subscriptions?canceled=1")
    assert canceled and {record["status"] for record in canceled} == {"canceled"}


def test_payments_include_applied_to_only_when_asked(
    server: EmulatorServer, session: requests.Session
) -> None:
    plain = get(session, server, "/payments").json()
    assert plain and all("applied_to" not in payment for payment in plain)
    full = get(session, server, "/payments", include="applied_to").json()
    assert all("applied_to" in payment for payment in full)
    assert full == server.records("payments")[:100]


def test_updated_after_is_strictly_greater(
    server: EmulatorServer, session: requests.Session
) -> None:
    truth = server.records("credit_balance_adjustments")
    stamp = sorted(record.get("updated_at", record["created_at"]) for record in truth)[10]
    expected = {
        record["id"] for record in truth if record.get("updated_at", record["created_at"]) > stamp
    }
    listed, _ = walk(session, server.url + f"/credit_balance_adjustments?updated_after={stamp}")
    assert {record["id"] for record in listed} == expected


def test_start_and_end_date_are_inclusive(
    server: EmulatorServer, session: requests.Session
) -> None:
    truth = server.records("invoices")
    day = truth[42]["date"]
    listed = get(session, server, "/invoices", start_date=day, end_date=day).json()
    assert {record["id"] for record in listed} == {r["id"] for r in truth if r["date"] == day}


@pytest.mark.parametrize(("listing", "field", "newest_first"), [("invoices", "date", False), ("events", "timestamp", True)])  # fmt: skip
def test_date_windows_split_a_listing_by_date(
    server: EmulatorServer, session: requests.Session, listing: str, field: str, newest_first: bool
) -> None:
    """Contiguous windows, walked page by page, give each record once, in its window, in the
    listing's order, with each window's own X-Total-Count (the emulator's date index)."""
    truth = server.records(listing)
    dates = sorted(record[field] for record in truth)
    third, two_thirds = dates[len(dates) // 3], dates[2 * len(dates) // 3]
    windows = [(dates[0], third), (third + 1, two_thirds), (two_thirds + 1, dates[-1])]
    seen: list[int] = []
    for start, end in windows:
        first = get(session, server, f"/{listing}", start_date=start, end_date=end, per_page=7)
        records, _ = walk(session, first.url)
        expected = sorted(
            (r["id"] for r in truth if start <= r[field] <= end), reverse=newest_first
        )
        assert [record["id"] for record in records] == expected
        assert int(first.headers["X-Total-Count"]) == len(expected)
        seen += expected
    assert sorted(seen) == sorted(record["id"] for record in truth)


def test_a_date_window_walk_reads_the_rows_as_they_are_now(scratch: EmulatorServer) -> None:
    """Rows inserted, updated or deleted during a windowed walk: the next pages continue from
    the cursor over the rows as they are then, not over those matched when the walk began."""
    http = requests.Session()
    http.auth = (KEY, "")
    start = min(record["date"] for record in scratch.records("invoices"))
    window = {"start_date": start, "end_date": 2**31 - 1, "per_page": 5}
    first = get(http, scratch, "/invoices", **window)
    cursor = first.json()[-1]["id"]
    total = int(first.headers["X-Total-Count"])
    changed = scratch.mutate("invoices", insert=3, update=3, delete=3)
    assert changed["inserted"] and changed["deleted"]
    rest, pages = walk(http, first.links["next"]["url"])
    live = sorted(
        r["id"] for r in scratch.records("invoices") if start <= r["date"] and r["id"] > cursor
    )
    assert pages == -(-total // 5) - 1  # the count cached on page 1 decides the last page
    assert [record["id"] for record in rest] == live[: len(rest)]
    assert len(rest) == min(len(live), pages * 5)


def test_filters_on_fields_metadata_and_related_to(
    server: EmulatorServer, session: requests.Session
) -> None:
    truth = server.records("customers")
    persons = get(session, server, "/customers", **{"filter[type]": "person"}).json()
    assert {r["id"] for r in persons} == {r["id"] for r in truth if r["type"] == "person"}
    tagged = next(r for r in truth if r["metadata"])
    key, value = next(iter(tagged["metadata"].items()))
    listed = get(session, server, "/customers", **{f"metadata[{key}]": value}).json()
    assert tagged["id"] in {r["id"] for r in listed}
    assert all(r["metadata"].get(key) == value for r in listed)
    related = get(session, server, "/events", related_to=f"customer,{tagged['id']}").json()
    assert "customer.created" in {event["type"] for event in related}


def test_customers_and_payments_refuse_unknown_parameters(
    server: EmulatorServer, session: requests.Session
) -> None:
    for listing in ("customers", "payments"):
        response = get(session, server, f"/{listing}", bogus_param="1")
        assert response.status_code == 400
        body = response.json()
        assert body["type"] == "invalid_request" and "bogus_param" in body["message"]
        assert "param" in body
    # Other listings ignore what they do not know.
    assert get(session, server, "/invoices", bogus_param="1").status_code == 200
    assert get(session, server, "/customers", start_date="1").status_code == 400


# ------------------------------------------------------------------------------------------
# Faults and rate limiting
# ------------------------------------------------------------------------------------------


def one_faulty_request(emulator: EmulatorServer, kind: str) -> requests.Response | Exception:
    emulator.set_faults(FaultConfig(fault_rate=1, fault_kinds=(kind,), retry_after_seconds=0.01))
    try:
        return requests.get(emulator.url + "/customers", auth=(KEY, ""), timeout=10)
    except requests.RequestException as error:
        return error
    finally:
        emulator.set_faults(FaultConfig())


@pytest.mark.parametrize(
    "kind",
    [
        "500_json",
        "502_html",
        "503_html",
        "drop",
        "429_retry_after",
        "429_no_retry_after",
        "truncated_json",
    ],
)
def test_each_fault_kind_happens(scratch: EmulatorServer, kind: str) -> None:
    outcome = one_faulty_request(scratch, kind)
    if kind == "drop":
        assert isinstance(outcome, requests.ConnectionError)
    else:
        assert isinstance(outcome, requests.Response)
        expected_status = {"500": 500, "502": 502, "503": 503, "429": 429, "tru": 200}[kind[:3]]
        assert outcome.status_code == expected_status
        if kind == "500_json":
            assert outcome.json()["type"] == "api_error"
        if kind.endswith("_html"):
            assert outcome.headers["Content-Type"].startswith("text/html")
        if kind.startswith("429"):
            assert outcome.json()["type"] == "rate_limit_error"
            assert outcome.headers.get("Retry-After") == (
                "0.01" if kind == "429_retry_after" else None
            )
        if kind == "truncated_json":
            assert int(outcome.headers["Content-Length"]) == len(outcome.content)
            with pytest.raises(ValueError):
                json.loads(outcome.content)
    assert scratch.stats()["faults_injected"] == 1
    # Control endpoints never fault, and the API recovers once faults are off.
    assert requests.get(scratch.url + "/_emulator/truth", timeout=10).status_code == 200
    assert requests.get(scratch.url + "/customers", auth=(KEY, ""), timeout=10).ok


def test_concurrent_requests_above_the_cap_get_429(
    scratch: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request is held in flight until the second has been answered: no timing."""
    scratch.set_faults(FaultConfig(max_in_flight=1))
    holding, release = hold_answers(monkeypatch, scratch)
    responses: list[requests.Response] = []

    def call() -> None:
        responses.append(requests.get(scratch.url + "/customers", auth=(KEY, ""), timeout=30))

    first = threading.Thread(target=call)
    first.start()
    assert holding.wait(30)  # the first request holds the only slot
    call()
    release.set()
    first.join()
    assert [r.status_code for r in responses] == [429, 200]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["type"] == "rate_limit_error"
    assert "Retry-After" not in refused.headers
    assert scratch.stats()["max_in_flight_seen"] == 2
    assert scratch.stats()["by_status"] == {"200": 1, "429": 1}


def test_control_api_over_http(scratch: EmulatorServer) -> None:
    base = scratch.url + "/_emulator"
    assert requests.get(base + "/truth", timeout=10).json() == scratch.truth()
    records = requests.get(base + "/records/invoices", timeout=10)
    assert records.json() == scratch.records("invoices")
    faults = {"fault_rate": 1, "fault_kinds": ["500_json"], "latency_ms": 0}
    assert requests.post(base + "/faults", json=faults, timeout=10).ok
    assert requests.get(scratch.url + "/customers", auth=(KEY, ""), timeout=10).status_code == 500
    assert requests.post(base + "/faults", json={}, timeout=10).ok
    stats = requests.get(base + "/stats", timeout=10).json()
    assert stats["requests"] == 1 and stats["by_status"] == {"500": 1}
    assert requests.post(base + "/reset-stats", timeout=10).json()["requests"] == 0
    mutation = {"listing": "customers", "insert": 2}
    result = requests.post(base + "/mutate", json=mutation, timeout=10).json()
    assert len(result["inserted"]) == 2
    assert (
        requests.post(base + "/mutate", json={"listing": "events"}, timeout=10).status_code == 400
    )


# ------------------------------------------------------------------------------------------
# Mutations
# ------------------------------------------------------------------------------------------


def test_mutations_change_truth_records_and_events(scratch: EmulatorServer) -> None:
    before = scratch.truth()
    latest = max(r["updated_at"] for r in scratch.records("invoices"))
    result = scratch.mutate("invoices", insert=3, update=2, delete=2)
    after = scratch.truth()
    assert after["invoices"] == before["invoices"] + 1
    assert after["events"] == before["events"] + 7
    invoices = {record["id"]: record for record in scratch.records("invoices")}
    assert set(result["inserted"]) <= set(invoices)
    assert not set(result["deleted"]) & set(invoices)
    for rid in result["updated"]:
        assert invoices[rid]["updated_at"] > latest
        assert_document_totals(invoices[rid])
    events = scratch.records("events")[-7:]
    types = [event["type"] for event in events]
    assert types == ["invoice.created"] * 3 + ["invoice.updated"] * 2 + ["invoice.deleted"] * 2
    assert [event["data"]["object"]["id"] for event in events[-2:]] == result["deleted"]
    assert all("updated_at" in event["data"]["previous"] for event in events[3:5])
    customers = {record["id"] for record in scratch.records("customers")}
    assert all(invoices[rid]["customer"] in customers for rid in result["inserted"])


def test_credit_balance_adjustment_events_are_transactions(scratch: EmulatorServer) -> None:
    scratch.mutate("credit_balance_adjustments", insert=1, update=1, delete=1)
    http = requests.Session()
    http.auth = (KEY, "")
    newest = http.get(scratch.url + "/events", params={"per_page": 3}, timeout=10).json()
    assert [e["type"] for e in newest] == [
        "transaction.deleted",
        "transaction.updated",
        "transaction.created",
    ]


def test_updating_subscriptions_cancels_some(scratch: EmulatorServer) -> None:
    updated = scratch.mutate("subscriptions", update=10)["updated"]
    statuses = {r["id"]: r for r in scratch.records("subscriptions") if r["id"] in updated}
    canceled = [r for r in statuses.values() if r["status"] == "canceled" and r["canceled_at"]]
    assert canceled


# ------------------------------------------------------------------------------------------
# Data shape and determinism
# ------------------------------------------------------------------------------------------

SAMPLE_FILES = {
    "customers": "customers.object.json",
    "invoices": "invoicing.invoices.object.json",
    "payments": "payments.object.json",
    "subscriptions": "subscriptions.object.json",
    "credit_notes": "credit_notes.object.json",
    "estimates": "estimates.object.json",
    "credit_balance_adjustments": "credit_balance_adjustments.object.json",
}


def assert_document_totals(document: dict[str, Any]) -> None:
    def total(entries: list[dict[str, Any]]) -> Decimal:
        return sum((Decimal(str(entry["amount"])) for entry in entries), Decimal(0))

    subtotal = total(document["items"])
    discounts = total(document["discounts"]) + sum(
        (total(item["discounts"]) for item in document["items"]), Decimal(0)
    )
    taxes = total(document["taxes"]) + sum(
        (total(item["taxes"]) for item in document["items"]), Decimal(0)
    )
    assert Decimal(str(document["subtotal"])) == subtotal
    assert Decimal(str(document["total"])) == subtotal - discounts + taxes


def test_records_are_shaped_like_the_samples(server: EmulatorServer) -> None:
    for listing, sample_file in SAMPLE_FILES.items():
        sample = json.loads((SAMPLES / sample_file).read_text())
        records = server.records(listing)
        assert all(set(sample) - {"updated_at"} <= set(record) for record in records), listing
    adjustments = server.records("credit_balance_adjustments")
    missing = sum("updated_at" not in record for record in adjustments)
    assert 0 < missing < len(adjustments) / 2
    subscriptions = EmulatorServer(scale=0.3).records("subscriptions")
    ended = sum(record["status"] in ("canceled", "finished") for record in subscriptions)
    assert 0.2 < ended / len(subscriptions) < 0.5


def test_records_are_consistent(server: EmulatorServer, session: requests.Session) -> None:
    customers = {record["id"] for record in server.records("customers")}
    invoices = server.records("invoices")
    invoice_ids = {record["id"] for record in invoices}
    for listing in ("invoices", "credit_notes", "estimates", "subscriptions"):
        for record in server.records(listing):
            assert record["customer"] in customers
            assert record["updated_at"] >= record["created_at"]
            if listing != "subscriptions":
                assert_document_totals(record)
    item_ids = [item["id"] for invoice in invoices for item in invoice["items"]]
    assert len(item_ids) == len(set(item_ids))
    for payment in server.records("payments"):
        for application in payment["applied_to"]:
            assert application["invoice"] is None or application["invoice"] in invoice_ids
    names = {record["name"] for record in server.records("customers")}
    assert any(not name.isascii() for name in names)
    assert len({tuple(sorted(r["metadata"])) for r in server.records("customers")}) > 3


def test_wire_format_matches_the_service(server: EmulatorServer, session: requests.Session) -> None:
    text = get(session, server, "/invoices").text
    assert "https:\\/\\/dundermifflin.invoiced.com\\/invoices\\/" in text
    amounts = [
        value
        for invoice in json.loads(text, parse_float=Decimal)
        for value in (invoice["total"], invoice["subtotal"], invoice["balance"])
    ]
    assert {type(value) for value in amounts} == {int, Decimal}  # ints and floats on the wire
    assert all(value.as_tuple().exponent >= -2 for value in amounts if isinstance(value, Decimal))
    unit_costs = re.findall(r'"unit_cost":(-?[0-9.]+)', text)
    assert all(len(cost.partition(".")[2]) <= 4 for cost in unit_costs)


def test_same_seed_gives_the_same_bytes() -> None:
    first, second = Dataset(scale=0.05, seed=7), Dataset(scale=0.05, seed=7)
    for listing in LISTINGS:
        assert first.records_bytes(listing) == second.records_bytes(listing)
    assert Dataset(scale=0.05, seed=8).records_bytes("invoices") != first.records_bytes("invoices")
    for listing in ("customers", "payments", "estimates"):
        a = first.mutate(listing, insert=2, update=3, delete=2)
        assert a == second.mutate(listing, insert=2, update=3, delete=2)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def test_cli_starts_serves_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "invoiced_assets.emulator", "--port", "0", "--scale", "0.02"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"Invoiced emulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        response = requests.get(match.group(1) + "/customers", auth=(KEY, ""), timeout=10)
        assert response.status_code == 200 and response.json()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_refuses_a_non_loopback_host() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "invoiced_assets.emulator", "--host", "0.0.0.0"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=30)
    assert result.returncode == 2
    assert "only listens on 127.0.0.1" in result.stderr


def test_a_walk_is_the_same_whether_per_page_100_is_spelled_out_or_not() -> None:
    """Links omit per_page=100; the cached count of a walk must still be its page 1's count."""
    with EmulatorServer(scale=0.2, seed=4, api_key="k") as server:
        for _ in range(2):
            url: str | None = f"{server.url}/customers?per_page=100"
            seen: list[int] = []
            while url:
                response = requests.get(url, auth=("k", ""), timeout=5)
                seen += [r["id"] for r in response.json()]
                url = response.links.get("next", {}).get("url")
            assert sorted(seen) == sorted(r["id"] for r in server.records("customers"))
            server.mutate("customers", insert=3, delete=2)


# ------------------------------------------------------------------------------------------
# Catalog, notes, tasks, customers' contacts and payment sources
# ------------------------------------------------------------------------------------------

CATALOG = ("plans", "items", "coupons", "tax_rates")
NEW_LISTINGS = (*CATALOG, "notes", "tasks", "contacts", "payment_sources")


def test_original_listings_keep_their_bytes() -> None:
    """The new listings draw from their own random streams: the original seven listings and
    their creation events are byte for byte what they were before the new listings existed,
    but for one deliberate change (2026-12-01): an `updated_at` drawn past the account's end
    date is folded back into the record's life instead of clipped to that date, which had put
    5 % of every listing in its last second. Every other value is as before."""
    account = Dataset(scale=0.2, seed=1)
    customers = hashlib.sha256(account.records_bytes("customers")).hexdigest()
    assert customers == "a80bd9e3f137ebda71fc0015e7f517b9c92eee3e16f5d7fd1cc5dae09dcb77eb"
    seven = hashlib.sha256()
    for listing in LISTINGS[:7]:
        seven.update(account.records_bytes(listing))
    assert seven.hexdigest() == "f73ef76225a6caa77eed3a36d249e8f4e38c1027af81ad77dcbd9120de04fc70"
    # Their events now carry the customer expanded (2026-12): with it collapsed back to its id,
    # every original event is as it was.
    events = account.records("events")
    customers = {record["id"]: record for record in account.records("customers")}
    collapsed = []
    for event in events[:2200]:
        subject = event["data"]["object"]
        if isinstance(subject.get("customer"), dict):
            assert subject["customer"] == customers[subject["customer"]["id"]]
            subject["customer"] = subject["customer"]["id"]
        collapsed.append(event)
    original = json.dumps(collapsed, sort_keys=True).encode()
    assert hashlib.sha256(original).hexdigest() == (
        "57e8e72ffbf68feefb34825bbcab4a0c3e8c6b1d53cafadfdaff49280bd4664f"
    )
    # The new objects' creation events follow, in time order among themselves.
    appended = events[2200:]
    assert {event["type"].split(".")[0] for event in appended} == {
        "note",
        "task",
        "contact",
        "payment_source",
    }
    stamps = [event["timestamp"] for event in appended]
    assert stamps == sorted(stamps)
    # Mutations of the original listings are unchanged too (the customers' children go too).
    changes = account.mutate("customers", insert=2, update=3, delete=2)
    assert {key: changes[key] for key in ("inserted", "updated", "deleted")} == {
        "inserted": [15324, 15325],
        "updated": [15219, 15262, 15276],
        "deleted": [15047, 15303],
    }


def test_truth_counts_every_new_row(server: EmulatorServer) -> None:
    truth = server.truth()
    assert tuple(truth) == LISTINGS and LISTINGS[-1] == "events"
    for listing in NEW_LISTINGS:
        assert truth[listing] == len(server.records(listing)) > 0, listing
    assert max(truth, key=lambda listing: truth[listing]) == "events"
    created = Counter(event["type"] for event in server.records("events"))
    for listing, name in (
        ("notes", "note"),
        ("tasks", "task"),
        ("contacts", "contact"),
        ("payment_sources", "payment_source"),
    ):
        assert created[f"{name}.created"] == truth[listing]
    assert not any(t.split(".")[0] in ("plan", "item", "coupon", "tax_rate") for t in created)


def test_plans_and_items_list_archived_rows_only_when_asked(
    server: EmulatorServer, session: requests.Session
) -> None:
    for listing in ("plans", "items"):
        truth = server.records(listing)
        archived = {r["id"] for r in truth if r["archived"]}
        live = {r["id"] for r in truth if not r["archived"]}
        assert archived and live, listing
        default, _ = walk(session, f"{server.url}/{listing}?per_page=7")
        only_archived, _ = walk(session, f"{server.url}/{listing}?archived=1&per_page=7")
        assert [r["id"] for r in default] == sorted(live)
        assert [r["id"] for r in only_archived] == sorted(archived)
        assert len(default) + len(only_archived) == server.truth()[listing] == len(truth)
        first = get(session, server, f"/{listing}", archived=1)
        assert first.headers["X-Total-Count"] == str(len(archived))
        # An archived row is still retrievable by its id.
        one = sorted(archived)[0]
        assert get(session, server, f"/{listing}/{one}").json()["archived"] is True


def test_catalog_listings_ignore_updated_after(
    server: EmulatorServer, session: requests.Session
) -> None:
    future = 2_000_000_000
    for listing in CATALOG:
        everything, _ = walk(session, f"{server.url}/{listing}?updated_after={future}")
        expected = [r for r in server.records(listing) if not r.get("archived")]
        assert everything == expected, listing
    for listing in ("notes", "tasks"):
        assert get(session, server, f"/{listing}", updated_after=future).json() == []
    contact = server.records("contacts")[0]
    path = f"/customers/{contact['customer_id']}/contacts"
    assert get(session, server, path, updated_after=future).json() == []


def test_string_ids_page_by_cursor(server: EmulatorServer, session: requests.Session) -> None:
    for listing in CATALOG:
        extra = "&archived=1" if listing in ("plans", "items") else ""
        records, pages = walk(session, f"{server.url}/{listing}?per_page=7")
        archived, _ = (
            walk(session, f"{server.url}/{listing}?per_page=7{extra}") if extra else ([], 0)
        )
        ids = [r["id"] for r in records]
        assert all(isinstance(rid, str) for rid in ids)
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # ordered as strings, once each
        assert pages == max(1, -(-len(ids) // 7))
        assert sorted(ids + [r["id"] for r in archived]) == [
            r["id"] for r in server.records(listing)
        ]
    assert get(session, server, "/plans/starter").json()["amount"] == 49
    missing = get(session, server, "/plans/no-such-plan")
    assert missing.status_code == 404
    assert missing.json() == {
        "type": "invalid_request",
        "message": "Plan was not found: no-such-plan",
    }


def test_string_id_pages_continue_after_the_last_id(scratch: EmulatorServer) -> None:
    http = requests.Session()
    http.auth = (KEY, "")
    first = get(http, scratch, "/items", per_page=7)
    last = first.json()[-1]["id"]
    scratch.mutate("items", insert=4, delete=3)
    second = http.get(first.links["next"]["url"], timeout=10).json()
    live = sorted(r["id"] for r in scratch.records("items") if not r["archived"])
    assert [r["id"] for r in second] == [rid for rid in live if rid > last][:7]


def test_per_customer_listings(server: EmulatorServer, session: requests.Session) -> None:
    truth = server.truth()
    customers = [customer["id"] for customer in server.records("customers")]
    # Contacts carry the customer they are listed under, as `customer_id`.
    expected = {record["id"]: record for record in server.records("contacts")}
    seen: dict[Any, dict[str, Any]] = {}
    totals = 0
    for customer in customers:
        url = f"{server.url}/customers/{customer}/contacts?per_page=2"
        totals += int(session.get(url, timeout=10).headers["X-Total-Count"])
        records, pages = walk(session, url)
        assert pages == max(1, -(-len(records) // 2))
        for record in records:
            assert record["customer_id"] == customer and "customer" not in record
            assert record["id"] not in seen
            seen[record["id"]] = record
    assert seen == expected and totals == truth["contacts"] == len(expected)
    # Payment sources name no customer: records() adds it.
    expected = {record["id"]: record for record in server.records("payment_sources")}
    seen = {}
    for customer in customers:
        path = f"/customers/{customer}/payment_sources"
        for record in get(session, server, path, include_hidden=1).json():
            assert "customer" not in record and "customer_id" not in record
            assert record["id"] not in seen
            seen[record["id"]] = {**record, "customer": customer}
    assert seen == expected and truth["payment_sources"] == len(expected)
    contacts = server.records("contacts")
    assert any(record["primary"] for record in contacts)
    kinds = Counter(record["object"] for record in server.records("payment_sources"))
    assert set(kinds) == {"card", "bank_account"}
    counts = Counter(record["customer_id"] for record in contacts)
    assert max(counts.values()) <= 3 and len(counts) < truth["customers"]  # 0-3 per customer
    sources = Counter(record["customer"] for record in server.records("payment_sources"))
    assert max(sources.values()) <= 2
    # Retrieval is per customer too.
    contact = contacts[0]
    own = get(session, server, f"/customers/{contact['customer_id']}/contacts/{contact['id']}")
    assert own.json() == contact
    other = next(c for c in customers if c != contact["customer_id"])
    elsewhere = get(session, server, f"/customers/{other}/contacts/{contact['id']}")
    assert elsewhere.status_code == 404
    assert elsewhere.json()["message"] == f"Contact was not found: {contact['id']}"
    source = server.records("payment_sources")[0]
    path = f"/customers/{source['customer']}/payment_sources/{source['id']}"
    assert get(session, server, path).json() == {k: v for k, v in source.items() if k != "customer"}
    for listing in ("contacts", "payment_sources"):
        assert get(session, server, f"/{listing}").status_code == 404


def test_hidden_payment_sources_only_with_include_hidden(
    server: EmulatorServer, session: requests.Session
) -> None:
    sources = server.records("payment_sources")
    for source in sources:  # like the card in samples/events.object.json
        assert isinstance(source["chargeable"], bool)
        if source["chargeable"]:
            assert source["failure_reason"] is None
        else:
            assert isinstance(source["failure_reason"], str) and source["failure_reason"]
    hidden = [source for source in sources if not source["chargeable"]]
    assert 0.05 < len(hidden) / len(sources) < 0.3
    owners = sorted({source["customer"] for source in hidden})
    assert len(owners) >= 5
    for customer in owners:
        theirs = [
            {k: v for k, v in source.items() if k != "customer"}
            for source in sources
            if source["customer"] == customer
        ]
        visible = [source for source in theirs if source["chargeable"]]
        path = f"/customers/{customer}/payment_sources"
        for flag in (None, "0", ""):
            listed = get(
                session, server, path, **({} if flag is None else {"include_hidden": flag})
            )
            assert listed.json() == visible
            assert listed.headers["X-Total-Count"] == str(len(visible))
        for flag in ("1", "true"):
            listed = get(session, server, path, include_hidden=flag)
            assert listed.status_code == 200 and listed.json() == theirs
            assert listed.headers["X-Total-Count"] == str(len(theirs))
            assert f"include_hidden={flag}" in listed.links["self"]["url"]
    # Top-level truth and records count the hidden ones.
    assert server.truth()["payment_sources"] == len(sources)


def test_payment_source_pages_are_not_sliced(
    server: EmulatorServer, session: requests.Session
) -> None:
    """Every page holds every source; the headers are computed as for any other listing."""
    visible = Counter(s["customer"] for s in server.records("payment_sources") if s["chargeable"])
    customer = min(c for c, number in visible.items() if number == 2)
    url = f"{server.url}/customers/{customer}/payment_sources?per_page=1"
    first = session.get(url, timeout=10)
    assert first.headers["X-Total-Count"] == "2" and "next" in first.links
    assert split_link(first.links["last"]["url"])[1]["page"] == "2"
    second = session.get(first.links["next"]["url"], timeout=10)
    assert len(first.json()) == 2 and second.json() == first.json()
    assert "next" not in second.links and second.headers["X-Total-Count"] == "2"
    records, pages = walk(session, url)
    assert pages == 2 and len(records) == 4  # a walk sees each source once per page
    assert len(get(session, server, f"/customers/{customer}/payment_sources", page=9).json()) == 2


def test_children_of_a_missing_parent_are_an_empty_list(
    server: EmulatorServer, session: requests.Session
) -> None:
    for path in (
        "/customers/1/contacts",
        "/customers/1/notes",
        "/customers/1/tasks",
        "/invoices/1/notes",
    ):
        response = get(session, server, path, per_page=10)
        assert response.status_code == 200 and response.json() == [], path
        assert response.headers["X-Total-Count"] == "0"
        assert set(response.links) == {"self", "first", "last"}
    missing = get(session, server, "/customers/1/payment_sources", include_hidden=1)
    assert missing.status_code == 404
    assert missing.json() == {"type": "invalid_request", "message": "Customer was not found: 1"}
    missing = get(session, server, "/customers/1/payment_sources/60001")
    assert missing.json()["message"] == "Customer was not found: 1"
    # A path the service does not know is another 404: the request is wrong.
    customer = server.records("customers")[0]["id"]
    for path in (
        "/contacts",
        "/payment_sources",
        f"/customers/{customer}/invoices",
        f"/customers/{customer}/notes/501",
        "/invoices/46001/tasks",
        "/no_such_listing",
    ):
        response = get(session, server, path)
        assert response.status_code == 404, path
        assert response.json() == {
            "type": "invalid_request",
            "message": f"Request was not recognized: GET {path}",
        }


def test_customer_and_invoice_notes_and_tasks(
    server: EmulatorServer, session: requests.Session
) -> None:
    notes = server.records("notes")
    own = Counter(note["customer"] for note in notes if note["invoice"] is None)
    on_invoices = {note["customer"] for note in notes if note["invoice"] is not None}
    customer = next(c for c, _n in own.most_common() if c in on_invoices)  # has both kinds
    expected = sorted(
        (n for n in notes if n["customer"] == customer and n["invoice"] is None),
        key=lambda note: note["id"],
        reverse=True,
    )
    assert len(expected) >= 2
    for sort in ({}, {"sort": "id asc"}, {"sort": "created_at asc"}, {"sort": "nonsense"}):
        first = get(session, server, f"/customers/{customer}/notes", per_page=1, **sort)
        assert first.headers["X-Total-Count"] == str(len(expected))
        records, pages = walk(session, first.url)
        assert records == expected and pages == len(expected), sort
    invoice = Counter(n["invoice"] for n in notes if n["invoice"] is not None).most_common(1)[0][0]
    records, _ = walk(session, f"{server.url}/invoices/{invoice}/notes?per_page=1")
    assert records == [note for note in notes if note["invoice"] == invoice]
    tasks = server.records("tasks")
    owner = Counter(task["customer_id"] for task in tasks).most_common(1)[0][0]
    records, _ = walk(session, f"{server.url}/customers/{owner}/tasks?per_page=1")
    assert records == [task for task in tasks if task["customer_id"] == owner]
    assert all("object" not in task and "user_id" in task for task in records)
    # The top-level listings keep every note and task.
    for listing, rows in (("notes", notes), ("tasks", tasks)):
        assert get(session, server, f"/{listing}").headers["X-Total-Count"] == str(len(rows))


def test_new_records_are_shaped_like_the_samples(server: EmulatorServer) -> None:
    samples = {
        "plans": "plans.object.json",
        "items": "items.object.json",
        "coupons": "coupons.object.json",
        "tax_rates": "tax_rates.object.json",
        "contacts": "contacts.object.json",
        "tasks": "tasks.object.json",
    }
    for listing, sample_file in samples.items():
        sample = set(json.loads((SAMPLES / sample_file).read_text()))
        assert all(sample <= set(record) for record in server.records(listing)), listing
    kinds = {
        "card": set(json.loads((SAMPLES / "sources.cards.object.json").read_text())),
        "bank_account": set(
            json.loads((SAMPLES / "sources.bank_accounts.object.json").read_text())
        ),
    }
    for source in server.records("payment_sources"):  # chargeable as in events.object.json
        added = {"customer", "chargeable", "failure_reason"}
        assert set(source) - added == kinds[source["object"]]
    notes = server.records("notes")
    note_fields = [
        "id",
        "object",
        "customer",
        "invoice",
        "notes",
        "user",
        "created_at",
        "updated_at",
    ]
    assert all(list(note) == note_fields for note in notes)
    assert any(not note["notes"].isascii() for note in notes)
    assert {note["user"] is None for note in notes} == {True, False}
    invoices = {record["id"]: record["customer"] for record in server.records("invoices")}
    assert all(invoices[n["invoice"]] == n["customer"] for n in notes if n["invoice"])
    customers = {record["id"] for record in server.records("customers")}
    assert all(task["customer_id"] in customers for task in server.records("tasks"))
    tiered = [plan["tiers"] for plan in server.records("plans") if plan["tiers"] is not None]
    assert tiered
    for tiers in tiered:
        assert "min_qty" not in tiers[0] and "max_qty" not in tiers[-1]
        assert all("unit_cost" in tier for tier in tiers)
    # What other objects reference exists in the catalog.
    plans = {plan["id"] for plan in server.records("plans")}
    for subscription in server.records("subscriptions"):
        assert subscription["plan"] in plans
        assert all(addon["plan"] in plans for addon in subscription["addons"])
    items = {item["id"] for item in server.records("items")}
    coupons = {coupon["id"] for coupon in server.records("coupons")}
    rates = {rate["id"] for rate in server.records("tax_rates")}
    for invoice in server.records("invoices"):
        for line in invoice["items"]:
            assert line["catalog_item"] is None or line["catalog_item"] in items
        assert all(
            d["coupon"] is None or d["coupon"]["id"] in coupons for d in invoice["discounts"]
        )
        assert all(t["tax_rate"] is None or t["tax_rate"]["id"] in rates for t in invoice["taxes"])


def without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


def test_contact_note_task_and_payment_source_events(scratch: EmulatorServer) -> None:
    before = scratch.truth()
    customers = {record["id"]: record for record in scratch.records("customers")}
    old_contacts = {record["id"]: record for record in scratch.records("contacts")}
    result = scratch.mutate("contacts", insert=1, update=1, delete=1)
    assert scratch.records("customers") == list(customers.values())  # contacts leave them be
    contacts = {record["id"]: record for record in scratch.records("contacts")}
    newest = scratch.records("events")[-3:]
    assert [event["type"] for event in newest] == [
        "contact.created",
        "contact.updated",
        "contact.deleted",
    ]
    inserted, updated, deleted = (result[k][0] for k in ("inserted", "updated", "deleted"))
    created_event, updated_event, deleted_event = (event["data"] for event in newest)
    for data, contact in (
        (created_event, contacts[inserted]),
        (updated_event, contacts[updated]),
        (deleted_event, old_contacts[deleted]),
    ):  # the contact, its customer_id, and its customer expanded beside it
        assert data["object"] == {**contact, "customer": customers[contact["customer_id"]]}
    assert updated_event["previous"] and "updated_at" in updated_event["previous"]
    for listing, name in (("notes", "note"), ("tasks", "task")):
        gone = scratch.mutate(listing, delete=1)["deleted"]
        event = scratch.records("events")[-1]
        assert event["type"] == f"{name}.deleted" and event["data"]["object"]["id"] == gone[0]
        assert gone[0] not in {record["id"] for record in scratch.records(listing)}
    after = scratch.truth()
    assert after["events"] == before["events"] + 5
    assert after["notes"] == before["notes"] - 1 and after["contacts"] == before["contacts"]
    # Payment sources have events too, their customer (named nowhere else) beside them.
    old_sources = {record["id"]: record for record in scratch.records("payment_sources")}
    result = scratch.mutate("payment_sources", insert=2, update=2, delete=1)
    sources = {record["id"]: record for record in scratch.records("payment_sources")}
    newest = scratch.records("events")[-5:]
    assert [event["type"] for event in newest] == [
        *["payment_source.created"] * 2,
        *["payment_source.updated"] * 2,
        "payment_source.deleted",
    ]
    subjects = [sources[rid] for rid in result["inserted"] + result["updated"]]
    subjects += [old_sources[rid] for rid in result["deleted"]]
    for event, source in zip(newest, subjects, strict=True):
        customer = customers[source["customer"]]
        expected = {**without(source, "customer"), "customer_id": customer["id"]}
        assert event["data"]["object"] == {**expected, "customer": customer}
    assert "updated_at" in newest[2]["data"]["previous"]
    assert scratch.truth()["events"] == after["events"] + 5
    # Catalog changes record no events.
    for listing in CATALOG:
        scratch.mutate(listing, insert=2, update=2, delete=1)
        assert scratch.truth()[listing] == after[listing] + 1
    assert scratch.truth()["events"] == after["events"] + 5


def test_payment_source_updates_hide_and_show_them(scratch: EmulatorServer) -> None:
    http = requests.Session()
    http.auth = (KEY, "")
    rounds = [{s["id"]: s for s in scratch.records("payment_sources")}]
    for _ in range(2):
        scratch.mutate("payment_sources", update=len(rounds[0]))
        rounds.append({s["id"]: s for s in scratch.records("payment_sources")})
    flips = [
        (before[rid]["chargeable"], after[rid])
        for before, after in pairwise(rounds)
        for rid in before
        if before[rid]["chargeable"] != after[rid]["chargeable"]
    ]
    hidden = [source for was, source in flips if was]
    shown = [source for was, source in flips if not was]
    assert hidden and shown
    assert all(source["failure_reason"] for source in hidden)
    assert all(source["failure_reason"] is None for source in shown)
    for source in rounds[-1].values():
        path = f"/customers/{source['customer']}/payment_sources"
        listed = {record["id"] for record in get(http, scratch, path).json()}
        assert (source["id"] in listed) == source["chargeable"]
        everything = {record["id"] for record in get(http, scratch, path, include_hidden=1).json()}
        assert source["id"] in everything


def test_deleting_a_customer_deletes_its_children_without_events(scratch: EmulatorServer) -> None:
    before = scratch.truth()
    notes, tasks = scratch.records("notes"), scratch.records("tasks")
    contacts, sources = scratch.records("contacts"), scratch.records("payment_sources")
    result = scratch.mutate("customers", delete=10)
    gone = set(result["deleted"])
    expected = {
        # A customer's notes include those on its invoices.
        "notes": sorted(note["id"] for note in notes if note["customer"] in gone),
        "tasks": sorted(task["id"] for task in tasks if task["customer_id"] in gone),
        "contacts": sorted(c["id"] for c in contacts if c["customer_id"] in gone),
        "payment_sources": sorted(s["id"] for s in sources if s["customer"] in gone),
    }
    assert all(expected.values()) and any(n["invoice"] for n in notes if n["customer"] in gone)
    assert result["cascaded"] == expected
    after = scratch.truth()
    for listing, ids in expected.items():
        assert after[listing] == before[listing] - len(ids), listing
        assert not set(ids) & {record["id"] for record in scratch.records(listing)}
    assert after["customers"] == before["customers"] - 10
    # One customer.deleted event each, and no event for what went with them.
    assert after["events"] == before["events"] + 10
    deletions = Counter(
        e["type"] for e in scratch.records("events") if e["type"].endswith("deleted")
    )
    assert deletions == {"customer.deleted": 10}
    http = requests.Session()
    http.auth = (KEY, "")
    for customer in gone:
        for child in ("contacts", "notes", "tasks"):
            listed = get(http, scratch, f"/customers/{customer}/{child}")
            assert listed.status_code == 200 and listed.json() == [], child
        sources_of = get(http, scratch, f"/customers/{customer}/payment_sources")
        assert sources_of.json()["message"] == f"Customer was not found: {customer}"
    for invoice in {n["invoice"] for n in notes if n["customer"] in gone and n["invoice"]}:
        assert get(http, scratch, f"/invoices/{invoice}/notes").json() == []


def test_deleting_an_invoice_deletes_its_notes_without_events(scratch: EmulatorServer) -> None:
    before = scratch.truth()
    notes = scratch.records("notes")
    result = scratch.mutate("invoices", delete=60)
    gone = set(result["deleted"])
    expected = sorted(note["id"] for note in notes if note["invoice"] in gone)
    assert expected and result["cascaded"] == {"notes": expected}
    after = scratch.truth()
    assert after["notes"] == before["notes"] - len(expected)
    assert after["events"] == before["events"] + 60
    assert {e["type"] for e in scratch.records("events")[-60:]} == {"invoice.deleted"}
    assert not any(e["type"] == "note.deleted" for e in scratch.records("events"))
    http = requests.Session()
    http.auth = (KEY, "")
    for invoice in gone:
        listed = get(http, scratch, f"/invoices/{invoice}/notes")
        assert listed.status_code == 200 and listed.json() == []
    # The customers' own notes stay.
    left = {note["id"] for note in scratch.records("notes")}
    assert all(note["id"] in left for note in notes if note["invoice"] is None)


EXPANDED = {
    "invoices": "invoice",
    "credit_notes": "credit_note",
    "estimates": "estimate",
    "payments": "payment",
    "subscriptions": "subscription",
    "credit_balance_adjustments": "transaction",
    "contacts": "contact",
    "notes": "note",
    "tasks": "task",
    "payment_sources": "payment_source",
}
CUSTOMER_ID_LISTINGS = ("contacts", "tasks", "payment_sources")


def assert_expanded(event: dict[str, Any], customers: dict[int, dict[str, Any]]) -> None:
    """`data.object.customer` is its customer's object (null stays null); the objects that
    carry `customer_id` keep it beside."""
    subject = event["data"]["object"]
    customer = subject["customer"]
    if customer is None:
        assert event["type"].startswith("payment."), event["type"]  # unmatched payments
        return
    assert customer == customers[customer["id"]], event["id"]
    if event["type"].split(".")[0] in ("contact", "task", "payment_source"):
        assert subject["customer_id"] == customer["id"]
    if subject.get("charge"):  # a payment's charge names its customer by id
        assert subject["charge"]["customer"] == customer["id"]


def test_events_carry_their_customer_expanded(server: EmulatorServer) -> None:
    customers = {record["id"]: record for record in server.records("customers")}
    kinds: Counter[str] = Counter()
    for event in server.records("events"):
        kind = event["type"].split(".")[0]
        if kind == "customer":  # unchanged: the customer itself
            assert event["data"]["object"] == customers[event["data"]["object"]["id"]]
            continue
        assert_expanded(event, customers)
        kinds[kind] += 1
    assert set(kinds) == set(EXPANDED.values())
    # Unmatched payments have no customer: theirs stays null.
    assert any(e["data"]["object"].get("customer", 0) is None for e in server.records("events"))


def test_mutation_events_expand_the_customer_as_it_is_then(scratch: EmulatorServer) -> None:
    customers = {record["id"]: record for record in scratch.records("customers")}
    for listing, name in EXPANDED.items():
        scratch.mutate(listing, insert=1, update=1, delete=1)
        newest = scratch.records("events")[-3:]
        assert [e["type"] for e in newest] == [
            f"{name}.{a}" for a in ("created", "updated", "deleted")
        ]
        for event in newest:
            assert_expanded(event, customers)
    # An event shows the customer as it was when the event was recorded.
    invoice = scratch.records("invoices")[0]
    scratch.mutate("customers", update=scratch.truth()["customers"])
    customers = {record["id"]: record for record in scratch.records("customers")}
    scratch.mutate("invoices", update=scratch.truth()["invoices"])
    events = [
        event
        for event in scratch.records("events")
        if event["type"].startswith("invoice.") and event["data"]["object"]["id"] == invoice["id"]
    ]
    created, updated = events[0], events[-1]
    assert (created["type"], updated["type"]) == ("invoice.created", "invoice.updated")
    assert updated["data"]["object"]["customer"] == customers[invoice["customer"]]
    assert created["data"]["object"]["customer"] != customers[invoice["customer"]]
    assert created["data"]["object"]["customer"]["id"] == invoice["customer"]


def test_catalog_updates_archive_and_restore(scratch: EmulatorServer) -> None:
    for listing in ("plans", "items"):
        before = {r["id"]: r["archived"] for r in scratch.records(listing)}
        updated = scratch.mutate(listing, update=len(before))["updated"]
        after = {r["id"]: r["archived"] for r in scratch.records(listing)}
        assert sorted(updated) == sorted(before) and set(after) == set(before)
        assert any(before[rid] != after[rid] for rid in before), listing


def test_an_event_whose_customer_is_gone_keeps_its_id() -> None:
    account = Dataset(scale=0.05, seed=2)
    gone = set(account.mutate("customers", delete=account.truth()["customers"])["deleted"])
    assert account.truth()["contacts"] == account.truth()["payment_sources"] == 0
    account.mutate("invoices", update=5)
    for event in account.records("events")[-5:]:
        assert event["type"] == "invoice.updated" and event["data"]["object"]["customer"] in gone


def test_control_api_serves_the_new_listings(scratch: EmulatorServer) -> None:
    base = scratch.url + "/_emulator"
    for listing in NEW_LISTINGS:
        assert requests.get(f"{base}/records/{listing}", timeout=10).json() == scratch.records(
            listing
        )
    # Contacts are what the API sends (with their customer_id); payment sources get a customer.
    http = requests.Session()
    http.auth = (KEY, "")
    contacts = requests.get(f"{base}/records/contacts", timeout=10).json()
    contact = contacts[0]
    assert "customer" not in contact and isinstance(contact["customer_id"], int)
    path = f"/customers/{contact['customer_id']}/contacts/{contact['id']}"
    assert get(http, scratch, path).json() == contact
    sources = requests.get(f"{base}/records/payment_sources", timeout=10).json()
    assert all(isinstance(record["customer"], int) for record in sources)
    assert {record["chargeable"] for record in sources} == {True, False}  # hidden ones too
    plans = scratch.truth()["plans"]
    mutation = {"listing": "plans", "insert": 2, "update": 1, "delete": 1}
    result = requests.post(f"{base}/mutate", json=mutation, timeout=10).json()
    assert all(isinstance(rid, str) for rid in result["inserted"]) and "cascaded" not in result
    assert requests.get(f"{base}/truth", timeout=10).json()["plans"] == plans + 1
    mutation = {"listing": "customers", "delete": 3}
    result = requests.post(f"{base}/mutate", json=mutation, timeout=10).json()
    assert set(result["cascaded"]) == {"notes", "tasks", "contacts", "payment_sources"}


def test_new_listings_are_deterministic() -> None:
    first, second = Dataset(scale=0.05, seed=7), Dataset(scale=0.05, seed=7)
    for listing in NEW_LISTINGS:
        assert first.records_bytes(listing) == second.records_bytes(listing)
        a = first.mutate(listing, insert=2, update=3, delete=2)
        assert a == second.mutate(listing, insert=2, update=3, delete=2)
        assert first.records_bytes(listing) == second.records_bytes(listing)
    assert Dataset(scale=0.05, seed=8).records_bytes("contacts") != Dataset(
        scale=0.05, seed=7
    ).records_bytes("contacts")


def test_updates_are_spread_over_the_account_not_piled_on_its_last_second() -> None:
    """A real account's last second holds a handful of records: an incremental read's
    one-second overlap re-reads those. Clipped dates once put 5 % of each listing there."""
    account = Dataset(scale=1, seed=7)
    for listing in ("customers", "invoices", "payments"):
        stamps = [record["updated_at"] for record in account.records(listing)]
        newest = max(stamps)
        assert sum(1 for stamp in stamps if stamp >= newest - 1) <= 3, listing
        created = {r["id"]: r["created_at"] for r in account.records(listing)}
        assert all(created[r["id"]] <= r["updated_at"] for r in account.records(listing)), listing
