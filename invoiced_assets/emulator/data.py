"""Deterministic synthetic Invoiced account: generation, storage and mutations.

Everything here is derived from one ``random.Random(seed)``: the same seed and scale give the same
records, byte for byte. Records are shaped like the reference samples in
``/work/shared/invoiced-api/samples`` and serialized the way the live service does it (PHP
``json_encode``: compact, non-ASCII as ``\\uXXXX``, ``/`` escaped as ``\\/``).

Each record is serialized once, to bytes, and re-serialized only when a mutation changes it, so
that a page of records is a byte join and a scale-5 account fits in modest memory. Records are
parsed back (``json.loads``) only for mutations and for filters on uncommon fields.

The seven original listings (customers ... credit balance adjustments) and their creation events
come from ``random.Random(seed)`` exactly as before the other listings existed. Plans, items,
coupons, tax rates, notes, tasks, contacts and payment sources each draw from their own stream
(``random.Random(f"{seed}:<listing>")``), so adding or changing them never moves a byte of the
original records. The creation events of notes, tasks, contacts and payment sources follow the
original creation events in the same id sequence (in timestamp order among themselves); event ids
therefore rise with time within each of the two blocks, and every later event (mutations) is newer
than both. Plans, items, coupons and tax rates record no events.

An event's ``data.object`` carries its customer expanded, as the service's events do: for
invoices, credit notes, estimates, payments, subscriptions, credit balance adjustments, contacts,
notes, tasks and payment sources, ``customer`` is the customer object exactly as the customers
listing sent it when the event was recorded (contacts, tasks and payment sources keep
``customer_id`` beside it). The customer's bytes are shared with its row, not copied, so that the
expansion costs an account little memory.

Plans, items, coupons and tax rates have string ids (chosen by the user in the service) and are
ordered by id as strings. Contacts (which carry ``customer_id``) and payment sources (which name
no customer) are served only under ``/customers/{id}/``; notes and tasks both at the top level
and under their customer, and notes also under their invoice. Each of those listings is stored
once (for truth, records and top-level listings) and indexed per parent (for serving). Deleting a
customer deletes its contacts, notes, tasks and payment sources, and deleting an invoice its
notes, as the service's foreign keys do: without an event for any of them.

Payment sources that can no longer be charged (``chargeable: false``, with a ``failure_reason``)
are stored like the others; the server hides them unless asked.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from bisect import bisect_right, insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

LISTINGS: tuple[str, ...] = (
    "customers",
    "invoices",
    "payments",
    "subscriptions",
    "credit_notes",
    "estimates",
    "credit_balance_adjustments",
    "plans",
    "items",
    "coupons",
    "tax_rates",
    "notes",
    "tasks",
    "contacts",
    "payment_sources",
    "events",
)
"""Listings the emulator serves, in dependency order (events last: they wrap the others).

`contacts` and `payment_sources` are served per customer, as /customers/{id}/contacts and
/customers/{id}/payment_sources; every other listing is served at /<listing> (notes and tasks
also under their parents: see CHILDREN).
"""

RECORD_LISTINGS: tuple[str, ...] = LISTINGS[:-1]

ORIGINAL_LISTINGS: tuple[str, ...] = LISTINGS[:7]
"""The listings generated from `random.Random(seed)`: their bytes never depend on the others."""

CATALOG_LISTINGS: tuple[str, ...] = ("plans", "items", "coupons", "tax_rates")
"""String ids ordered as strings; `updated_after` is ignored and no events are recorded."""

ARCHIVABLE_LISTINGS: frozenset[str] = frozenset({"plans", "items"})
"""Listed unarchived by default; `archived=1` lists only the archived rows."""

CUSTOMER_LISTINGS: tuple[str, ...] = ("contacts", "payment_sources")
"""Served only under /customers/{id}/ (listed and retrieved there), never at the top level."""

TOP_LEVEL_LISTINGS: tuple[str, ...] = tuple(
    listing for listing in LISTINGS if listing not in CUSTOMER_LISTINGS
)

ANONYMOUS_LISTINGS: frozenset[str] = frozenset({"payment_sources"})
"""Records that do not name their customer on the wire: records() and events add it."""

PARENTS: dict[str, str] = {"customers": "customer", "invoices": "invoice"}
"""Listings other rows belong to, and the Row attribute that names a row's parent."""

CHILDREN: dict[str, tuple[str, ...]] = {
    "customers": ("notes", "tasks", "contacts", "payment_sources"),
    "invoices": ("notes",),
}
"""What belongs to a customer or an invoice: listed under /<parent>/{id}/<child>, and deleted
with its parent by the service's foreign keys, so without events. A customer's notes include
those on its invoices (a note names the customer of its invoice)."""

INDEXES: tuple[tuple[str, str], ...] = tuple(
    (child, PARENTS[parent]) for parent, children in CHILDREN.items() for child in children
)
"""(listing, parent attribute) pairs indexed per parent id."""

EVENTLESS_LISTINGS: frozenset[str] = frozenset(CATALOG_LISTINGS)

EXPANDED_LISTINGS: frozenset[str] = frozenset(
    listing
    for listing in RECORD_LISTINGS
    if listing != "customers" and listing not in EVENTLESS_LISTINGS
)
"""Listings whose events carry their customer expanded in `data.object`."""

OBJECT_NAMES: dict[str, str] = {
    "customers": "customer",
    "invoices": "invoice",
    "payments": "payment",
    "subscriptions": "subscription",
    "credit_notes": "credit_note",
    "estimates": "estimate",
    "credit_balance_adjustments": "credit_balance_adjustment",
    "plans": "plan",
    "items": "item",
    "coupons": "coupon",
    "tax_rates": "tax_rate",
    "notes": "note",
    "tasks": "task",
    "contacts": "contact",
    "payment_sources": "payment_source",  # each record's `object` is `card` or `bank_account`
    "events": "event",
}

# The service names credit balance adjustments' events `transaction.*`.
EVENT_OBJECTS: dict[str, str] = {
    listing: ("transaction" if listing == "credit_balance_adjustments" else name)
    for listing, name in OBJECT_NAMES.items()
    if listing != "events" and listing not in EVENTLESS_LISTINGS
}

HUMAN_NAMES: dict[str, str] = {
    "customers": "Customer",
    "invoices": "Invoice",
    "payments": "Payment",
    "subscriptions": "Subscription",
    "credit_notes": "Credit Note",
    "estimates": "Estimate",
    "credit_balance_adjustments": "Credit Balance Adjustment",
    "plans": "Plan",
    "items": "Item",
    "coupons": "Coupon",
    "tax_rates": "Tax Rate",
    "notes": "Note",
    "tasks": "Task",
    "contacts": "Contact",
    "payment_sources": "Payment Source",
    "events": "Event",
}

BASE_COUNTS: dict[str, int] = {
    "customers": 1000,
    "subscriptions": 400,
    "invoices": 5000,
    "credit_notes": 500,
    "estimates": 800,
    "payments": 3000,
    "credit_balance_adjustments": 300,
}
# Generated after the original listings, each from its own random stream.
EXTRA_BASE_COUNTS: dict[str, int] = {"notes": 2000, "tasks": 1500}
# The catalog grows with the square root of the scale: accounts have tens of plans, not thousands.
CATALOG_BASE_COUNTS: dict[str, int] = {"plans": 40, "items": 120, "coupons": 15, "tax_rates": 10}
# Per customer: how many contacts (0-3) and payment sources (0-2), drawn uniformly from these.
CONTACTS_PER_CUSTOMER = (0, 0, 1, 1, 1, 1, 2, 2, 3, 3)
SOURCES_PER_CUSTOMER = (0, 0, 0, 0, 1, 1, 1, 1, 2, 2)

# Generation order: referenced objects before the objects that point at them.
GENERATION_ORDER: tuple[str, ...] = (
    "customers",
    "subscriptions",
    "invoices",
    "credit_notes",
    "estimates",
    "payments",
    "credit_balance_adjustments",
)

FIRST_IDS: dict[str, int] = {
    "customers": 15001,
    "subscriptions": 501,
    "invoices": 46001,
    "credit_notes": 2001,
    "estimates": 3001,
    "payments": 61,
    "credit_balance_adjustments": 701,
    "notes": 501,
    "tasks": 788,
    "contacts": 10403,
    "payment_sources": 60001,  # above the ids of the sources embedded in customers and charges
    "events": 11_200_001,
}

NUMBER_PREFIXES: dict[str, str] = {
    "customers": "CUST",
    "invoices": "INV",
    "credit_notes": "CN",
    "estimates": "EST",
}

# Top-level attributes per object, in the order the samples list them.
FIELDS: dict[str, tuple[str, ...]] = {
    "customers": (
        "id", "object", "name", "number", "email", "autopay", "payment_terms", "payment_source",
        "taxes", "type", "attention_to", "address1", "address2", "city", "state", "postal_code",
        "country", "language", "currency", "tax_id", "phone", "notes", "sign_up_page",
        "sign_up_url", "statement_pdf_url", "updated_at", "created_at", "metadata",
        "autopay_delay_days", "avalara_entity_use_code", "avalara_exemption_number", "chase",
        "chasing_cadence", "next_chase_step", "credit_hold", "credit_limit", "owner",
        "parent_customer", "taxable", "ach_gateway", "cc_gateway",
    ),
    "invoices": (
        "id", "object", "customer", "ship_to", "name", "currency", "draft", "closed", "paid",
        "status", "autopay", "attempt_count", "next_payment_attempt", "subscription", "number",
        "date", "due_date", "payment_terms", "purchase_order", "items", "notes", "subtotal",
        "discounts", "taxes", "total", "balance", "url", "payment_url", "pdf_url", "updated_at",
        "created_at", "metadata", "payment_plan",
    ),
    "credit_notes": (
        "id", "object", "customer", "name", "currency", "draft", "closed", "paid", "status",
        "number", "date", "purchase_order", "items", "notes", "subtotal", "discounts", "taxes",
        "total", "balance", "url", "pdf_url", "updated_at", "created_at", "metadata",
    ),
    "estimates": (
        "id", "object", "customer", "ship_to", "invoice", "name", "currency", "draft", "closed",
        "status", "number", "date", "payment_terms", "purchase_order", "items", "notes",
        "subtotal", "discounts", "taxes", "total", "deposit", "deposit_paid", "url", "pdf_url",
        "updated_at", "created_at", "metadata", "approved", "expiration_date",
    ),
    "payments": (
        "amount", "balance", "created_at", "charge", "currency", "customer", "date", "id",
        "matched", "method", "notes", "object", "reference", "ach_sender_id", "source", "voided",
        "updated_at", "pdf_url", "applied_to",
    ),
    "subscriptions": (
        "id", "object", "customer", "ship_to", "plan", "amount", "cycles", "quantity",
        "start_date", "period_start", "period_end", "cancel_at_period_end", "canceled_at",
        "status", "addons", "discounts", "taxes", "recurring_total", "mrr", "url", "updated_at",
        "created_at", "metadata", "bill_in", "bill_in_advance_days", "contract_period_end",
        "contract_period_start", "contract_renewal_cycles", "contract_renewal_mode", "paused",
    ),
    "credit_balance_adjustments": (
        "amount", "created_at", "currency", "customer", "date", "id", "notes", "object",
        "updated_at",
    ),
    "plans": (
        "id", "object", "name", "currency", "amount", "interval", "interval_count",
        "catalog_item", "updated_at", "created_at", "metadata", "pricing_mode", "quantity_type",
        "tiers", "archived",
    ),
    "items": (
        "id", "object", "name", "currency", "unit_cost", "description", "type", "taxes",
        "gl_account", "discountable", "taxable", "avalara_tax_code", "avalara_location_code",
        "updated_at", "created_at", "metadata", "archived",
    ),
    "coupons": (
        "id", "object", "name", "currency", "value", "is_percent", "updated_at", "created_at",
        "metadata", "exclusive", "expiration_date", "max_redemptions",
    ),
    "tax_rates": (
        "id", "object", "name", "currency", "value", "is_percent", "updated_at", "created_at",
        "metadata", "inclusive",
    ),
    "notes": ("id", "object", "customer", "invoice", "notes", "user", "created_at", "updated_at"),
    "tasks": (
        "action", "chase_step_id", "complete", "completed_by_user_id", "completed_date",
        "updated_at", "created_at", "customer_id", "due_date", "id", "name", "user_id",
    ),
    "contacts": (
        "id", "object", "name", "title", "email", "phone", "primary", "sms_enabled",
        "department", "address1", "address2", "city", "state", "postal_code", "country",
        "updated_at", "created_at", "customer_id",
    ),
    # Cards and bank accounts together (each record has its own kind's attributes only).
    "payment_sources": (
        "id", "object", "brand", "last4", "exp_month", "exp_year", "funding", "bank_name",
        "routing_number", "verified", "updated_at", "currency", "chargeable", "failure_reason",
    ),
    "events": ("id", "object", "type", "timestamp", "data"),
}  # fmt: skip

# Attributes holding objects or arrays: not filterable with filter[FIELD].
NESTED_FIELDS: frozenset[str] = frozenset(
    {
        "payment_source", "taxes", "metadata", "ship_to", "items", "discounts", "charge",
        "applied_to", "addons", "data", "tiers", "user",
    }
)  # fmt: skip

DATED_LISTINGS: frozenset[str] = frozenset({"invoices", "credit_notes", "estimates", "payments"})

START_TS = 1_672_531_200  # 2023-01-01T00:00:00Z
END_TS = 1_764_547_200  # 2025-12-01T00:00:00Z: every generated timestamp is in the past
DAY = 86_400
CENT = Decimal("0.01")
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
TENANT_URL = "https://dundermifflin.invoiced.com"


# --------------------------------------------------------------------------------------------
# Numbers and serialization
# --------------------------------------------------------------------------------------------


def num(value: Decimal) -> int | float:
    """A JSON number whose text is exactly `value`: integral values as ints, others as floats.

    A decimal with at most 15 significant digits survives the float round trip, and Python's
    float repr is the shortest text that round-trips, so the emitted text is the decimal itself.
    """
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def dec(value: Any) -> Decimal:
    """The exact decimal of a JSON number (None counts as zero)."""
    if value is None:
        return Decimal(0)
    return Decimal(str(value))


def money(value: Decimal) -> Decimal:
    """Round to cents, half up, as invoices are."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def dumps(value: Any) -> bytes:
    """Serialize like PHP ``json_encode`` with default flags: compact, ASCII, ``\\/`` escaped.

    `/` only occurs inside JSON strings, so escaping every `/` in the output is exact.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return text.replace("/", "\\/").encode("ascii")


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One stored record: its serialized forms plus the few fields listings filter on often.

    `id` is a string for plans, items, coupons and tax rates. `customer` is the customer a record
    belongs to (a task's or contact's `customer_id`; the parent of a payment source, whose bytes
    do not carry it). `invoice` is the invoice a note is on. `archived` is set for plans and
    items.

    `body` is the record's bytes, or for an event the pieces they are joined from: an event
    shares its customer's bytes with the customer's row instead of copying them.
    """

    id: Any
    body: bytes | tuple[bytes, ...]
    created_at: int
    updated_at: int | None
    date: int | None = None
    status: str | None = None
    customer: int | None = None
    invoice: int | None = None
    public: bytes | None = None
    event_type: str | None = None
    subject: str | None = None
    subject_id: Any = None
    archived: bool | None = None

    @property
    def blob(self) -> bytes:
        """The full record, as retrieval sends it."""
        body = self.body
        return body if isinstance(body, bytes) else b"".join(body)

    @property
    def listing_blob(self) -> bytes:
        """The form a listing sends by default (payments without `applied_to`)."""
        return self.blob if self.public is None else self.public

    def parse(self) -> dict[str, Any]:
        """The full record as parsed JSON."""
        return json.loads(self.blob)

    @property
    def with_customer(self) -> bytes:
        """The bytes with `"customer":<id>` appended: a payment source and its customer."""
        return self.blob[:-1] + b',"customer":' + str(self.customer).encode("ascii") + b"}"


class Table:
    """Rows of one listing, with their ids kept sorted for cursor pagination.

    Ids are integers, or strings (plans, items, coupons, tax rates) sorted as strings.
    """

    def __init__(self, listing: str) -> None:
        self.listing = listing
        self.ids: list[Any] = []
        self.rows: dict[Any, Row] = {}
        self.version = 0  # bumped by every change, so caches of derived orders can tell
        self._by_date: tuple[int, list[Any], list[Any]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def by_date(self) -> tuple[list[Any], list[Any]]:
        """(dates, ids) of the rows that have a `date`, sorted by date: an index, as the
        service's database has one, so that a date window does not scan the whole table.
        Rebuilt after any change."""
        if self._by_date is None or self._by_date[0] != self.version:
            pairs = sorted((row.date, row.id) for row in self.rows.values() if row.date is not None)
            self._by_date = (self.version, [d for d, _ in pairs], [i for _, i in pairs])
        return self._by_date[1], self._by_date[2]

    def add(self, row: Row) -> None:
        """Store a row whose id is above every id so far."""
        if self.ids and row.id <= self.ids[-1]:
            raise ValueError(f"{self.listing}: id {row.id} is not above {self.ids[-1]}")
        self.ids.append(row.id)
        self.rows[row.id] = row
        self.version += 1

    def insert(self, row: Row) -> None:
        """Store a row whose id is new, wherever it sorts (string ids chosen by the user)."""
        if row.id in self.rows:
            raise ValueError(f"{self.listing}: id {row.id!r} exists")
        insort(self.ids, row.id)
        self.rows[row.id] = row
        self.version += 1

    def replace(self, row: Row) -> None:
        self.rows[row.id] = row
        self.version += 1

    def remove(self, rid: Any) -> Row:
        row = self.rows.pop(rid)
        index = bisect_right(self.ids, rid) - 1
        del self.ids[index]
        self.version += 1
        return row

    def max_id(self) -> int:
        return self.ids[-1] if self.ids else FIRST_IDS[self.listing] - 1


def record_row(listing: str, record: dict[str, Any], parent: int | None = None) -> Row:
    """Serialize a record into a Row, extracting the hot filter fields.

    `parent`: the customer of a payment source (not an attribute of theirs).
    """
    public = None
    if listing == "payments":
        public = dumps({k: v for k, v in record.items() if k != "applied_to"})
    if listing == "customers":
        customer = record["id"]
    elif listing in ANONYMOUS_LISTINGS:
        customer = parent
    elif listing in ("tasks", "contacts"):
        customer = record["customer_id"]
    else:
        customer = record.get("customer")
    updated_at = record.get("updated_at")
    return Row(
        id=record["id"],
        body=dumps(record),
        # Payment sources carry only `updated_at`: it stands in for their creation time.
        created_at=record.get("created_at", updated_at),
        updated_at=updated_at,
        date=record.get("date"),
        status=record.get("status"),
        customer=customer,
        invoice=record.get("invoice") if listing == "notes" else None,
        public=public,
        archived=record.get("archived"),
    )


def expanded_object(listing: str, subject: Row, customer: bytes | None) -> tuple[bytes, ...]:
    """A record's bytes with its customer expanded, as pieces to join (no JSON round trip).

    `customer` is the customer's bytes, or None to keep the id (customer events, no customer,
    a customer that is gone). Documents, payments, adjustments and notes have a `customer` id
    to replace; contacts and tasks get `customer` added beside their `customer_id`; payment
    sources, which name no customer, get both added.
    """
    blob = subject.blob
    if subject.customer is None or listing not in EXPANDED_LISTINGS:
        return (blob,)
    cid = str(subject.customer).encode("ascii")
    expansion = customer if customer is not None else cid
    if listing in ANONYMOUS_LISTINGS:
        return (blob[:-1] + b',"customer_id":' + cid + b',"customer":', expansion, b"}")
    if listing in ("contacts", "tasks"):
        return (blob[:-1] + b',"customer":', expansion, b"}")
    # A payment's `charge` names the customer too and comes before it (applied_to, after it,
    # names none), so the top-level key is the last occurrence; elsewhere nothing nested
    # precedes the key, so it is the first. A key cannot occur inside a JSON string, where the
    # quotes are escaped.
    key = b'"customer":' + cid
    start = blob.rfind(key) if listing == "payments" else blob.find(key)
    end = start + len(key)
    if start < 0 or blob[end : end + 1] not in (b",", b"}"):
        raise ValueError(f"{listing} {subject.id}: no top-level customer {subject.customer}")
    return (blob[: start + len(b'"customer":')], expansion, blob[end:])


def event_row(
    event_id: int,
    listing: str,
    action: str,
    timestamp: int,
    subject: Row,
    previous: dict[str, Any] | None = None,
    customer: bytes | None = None,
) -> Row:
    """Wrap a record's bytes in an event without parsing it again.

    `customer`: the bytes of the subject's customer as the customers listing sends them at this
    moment, expanded into `data.object` (see `expanded_object`); the event keeps that very bytes
    object, which the customer's row shares until the customer changes.
    """
    event_type = f"{EVENT_OBJECTS[listing]}.{action}"
    head = (
        f'{{"id":{event_id},"object":"event","type":"{event_type}",'
        f'"timestamp":{timestamp},"data":{{"object":'
    ).encode("ascii")
    tail = b"}}" if previous is None else b',"previous":' + dumps(previous) + b"}}"
    pieces = expanded_object(listing, subject, customer)
    body: bytes | tuple[bytes, ...]
    if len(pieces) == 1:
        body = head + pieces[0] + tail
    else:  # the customer's bytes stay a piece of their own
        body = (head + pieces[0], *pieces[1:-1], pieces[-1] + tail)
    return Row(
        id=event_id,
        body=body,
        created_at=timestamp,
        updated_at=None,
        date=timestamp,
        customer=subject.customer,
        event_type=event_type,
        subject=EVENT_OBJECTS[listing],
        subject_id=subject.id,
    )


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

COMPANY_STEMS = (
    "Acme", "Dunder Mifflin", "Initech", "Globex", "Hooli", "Umbrella", "Vandelay", "Wayne",
    "Stark", "Wonka", "Tyrell", "Cyberdyne", "Soylent", "Gringotts", "Nakatomi", "Oceanic",
)  # fmt: skip
COMPANY_SUFFIXES = (" Inc.", " LLC", " Holdings", " Ltd", " Group", " Europe", " Co.", "")
SPECIAL_COMPANIES = (
    "Müller GmbH",
    "Société Générale",
    "株式会社テスト",
    "Ørsted Nordic ApS",
    "Café São Paulo Ltda",
    "Łódź Logistics Sp. z o.o.",
    "Brandt & Söhne KG",
    "O'Reilly Widgets",
    'The "Quoted" Company',
    "AT&T / Partners",
)
FIRST_NAMES = ("Sarah", "Jan", "Michael", "Pam", "José", "Zoë", "Ahmed", "Mei", "Olga", "Nancy")
LAST_NAMES = ("Fisher", "Levinson", "Scott", "Beesly", "García", "Nguyen", "Talty", "Åström")
SPECIAL_PEOPLE = ("Zoë 🚀", "Renée O'Connor", "Søren Kierkegaard", "Иван Петров")

ADDRESSES = (
    ("342 Amber St", "Hill Valley", "CA", "94523", "US"),
    ("2548 Bottom Lane", "Monument Beach", "MA", "02553", "US"),
    ("Marienplatz 8", "München", "BY", "80331", "DE"),
    ("29 Boulevard Haussmann", "Paris", None, "75009", "FR"),
    ("千代田区丸の内1-1", "東京都", None, "100-0005", "JP"),
    ("100 King St W", "Toronto", "ON", "M5H 1A1", "CA"),
    ("Av. Paulista, 1578", "São Paulo", "SP", "01310-200", "BR"),
    ("1 Poultry", "London", None, "EC2R 8EJ", "GB"),
)

METADATA_VALUES: dict[str, Callable[[random.Random], str]] = {
    "account_rep": lambda r: r.choice(("Jan", "Dwight", "Jim", "Phyllis", "Stanley")),
    "icp_number": lambda r: str(r.randint(10**9, 10**10 - 1)),
    "salesforce_id": lambda r: "0015" + "".join(r.choices(ALNUM, k=14)),
    "region": lambda r: r.choice(("emea", "amer", "apac")),
    "crm-id": lambda r: f"CRM/{r.randint(1, 99999)}",
    "netsuite_id": lambda r: str(r.randint(1000, 99999)),
    "segment": lambda r: r.choice(("smb", "mid-market", "enterprise")),
    "Legacy ID": lambda r: f"L-{r.randint(1, 9999):04d}",
    "hubspot_deal": lambda r: str(r.randint(10**7, 10**8)),
    "cost_center": lambda r: r.choice(("CC-100", "CC-200", "Zentrale/Verwaltung")),
    "po_required": lambda r: r.choice(("yes", "no")),
    "tier": lambda r: r.choice(("gold", "silver", "bronze")),
}

# (catalog item id, type, name, unit cost or None for a random cents amount, usage-priced)
CATALOG: tuple[tuple[str | None, str, str, Decimal | None, bool], ...] = (
    (None, "product", "Copy Paper, Case", Decimal("45"), False),
    ("delivery", "service", "Delivery", Decimal("10"), False),
    ("consulting", "hours", "Consulting (hourly)", Decimal("150"), False),
    ("toner", "product", "Toner Cartridge", Decimal("89.99"), False),
    ("api-calls", "usage", "API calls", Decimal("0.0025"), True),
    ("sms", "usage", "SMS messages", Decimal("0.0075"), True),
    ("storage-gb", "usage", "Storage (GB/month)", Decimal("0.125"), True),
    (None, "expense", "Travel expenses", None, False),
    ("support-plus", "service", "Premium support", Decimal("299"), False),
    ("onboarding", "service", "Onboarding — Einrichtung", Decimal("1250"), False),
    ("widget", "product", 'Widget 3/4"', Decimal("12.5"), False),
)
DESCRIPTIONS = (
    None,
    None,
    None,
    "Includes setup/installation",
    "Per agreement 2024/07",
    "Übergabe",
)

COUPONS: tuple[tuple[str, str, int, bool], ...] = (
    ("S8L47J", "Non-profit Discount", 20, True),
    ("LOYAL10", "Loyalty 10%", 10, True),
    ("WELCOME50", "Welcome $50", 50, False),
)
TAX_RATES: tuple[tuple[str, str, Decimal], ...] = (
    ("vat", "VAT", Decimal("20")),
    ("sales-tax-ca", "CA Sales Tax", Decimal("7.25")),
    ("gst", "GST", Decimal("5")),
)

# plan id -> (price per interval, interval)
PLANS: dict[str, tuple[Decimal, str]] = {
    "starter": (Decimal("49"), "month"),
    "pro": (Decimal("99"), "month"),
    "business": (Decimal("299.5"), "month"),
    "enterprise-annual": (Decimal("12000"), "year"),
    "basic-annual": (Decimal("490"), "year"),
}
# addon plan id -> monthly price
ADDON_PLANS: dict[str, Decimal] = {
    "ipad-license": Decimal("10"),
    "extra-seat": Decimal("15"),
    "support-plus": Decimal("99.99"),
}
PAYMENT_TERMS = ("NET 30", "NET 14", "NET 7", "NET 60", "DUE ON RECEIPT")


# --------------------------------------------------------------------------------------------
# Generation context
# --------------------------------------------------------------------------------------------


class Gen:
    """Random source, id counters and reference pickers shared by every record maker."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.counters: dict[str, int] = {}
        # Reference pools, wired to the live tables by the Dataset.
        self.customer_ids: list[int] = []
        # Creation times aligned with customer_ids while generating; None during mutations,
        # when any existing customer will do.
        self.customer_created: list[int] | None = []
        self.subscription_refs: list[tuple[int, int, int]] = []  # (created_at, id, customer)
        # Invoices by creation time while generating notes; empty during mutations.
        self.invoice_refs: list[tuple[int, int, int]] = []  # (created_at, id, customer)
        self.pool: Callable[[str], list[int]] = lambda _listing: []
        self.lookup: Callable[[str, int], dict[str, Any] | None] = lambda _listing, _id: None

    def next_id(self, counter: str, start: int = 1) -> int:
        """Next value of a named sequence (line item ids, document numbers, ...)."""
        value = self.counters.get(counter, start - 1) + 1
        self.counters[counter] = value
        return value

    def token(self) -> str:
        return "".join(self.rng.choices(ALNUM, k=24))

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def updated(self, created: int) -> int:
        """An updated_at at or after `created`: half the records never changed."""
        if self.chance(0.5):
            return created
        updated = created + self.rng.randint(60, 200 * DAY)
        if updated <= END_TS:
            return updated
        # Past the account's end: folded back into [created, END_TS] (clipping them all to
        # END_TS put 5 % of every listing in its last second, unlike any real account, and an
        # incremental read's one-second overlap then re-read all of them).
        return created + (updated - created) % (END_TS - created + 1)

    def customer_for(self, created: int | None) -> int:
        """A customer that existed at `created` (any existing customer during mutations)."""
        ids = self.customer_ids
        if self.customer_created is None or created is None:
            return self.rng.choice(ids)
        known = max(1, bisect_right(self.customer_created, created))
        return ids[self.rng.randrange(known)]

    def invoice_for(self, created: int | None) -> tuple[int, int] | None:
        """(invoice, its customer): one that existed at `created` (any existing one later)."""
        refs = self.invoice_refs
        if refs:
            known = len(refs) if created is None else bisect_right(refs, (created, math.inf))
            if known == 0:
                return None
            _created, invoice, customer = refs[self.rng.randrange(known)]
            return invoice, customer
        pool = self.pool("invoices")
        if not pool:
            return None
        invoice = self.rng.choice(pool)
        record = self.lookup("invoices", invoice)
        return (invoice, record["customer"]) if record else None

    def metadata(self, probability: float = 0.5) -> dict[str, str]:
        """Metadata whose keys vary from record to record."""
        if not self.chance(probability):
            return {}
        keys = self.rng.sample(sorted(METADATA_VALUES), self.rng.randint(1, 4))
        return {key: METADATA_VALUES[key](self.rng) for key in keys}

    def day(self, timestamp: int) -> int:
        """The document date for a creation time: that day at 06:00 UTC, as the samples show."""
        return timestamp - timestamp % DAY + 6 * 3600


def _company_name(g: Gen) -> str:
    if g.chance(0.25):
        return g.rng.choice(SPECIAL_COMPANIES)
    return g.rng.choice(COMPANY_STEMS) + g.rng.choice(COMPANY_SUFFIXES)


def _person_name(g: Gen) -> str:
    if g.chance(0.15):
        return g.rng.choice(SPECIAL_PEOPLE)
    return f"{g.rng.choice(FIRST_NAMES)} {g.rng.choice(LAST_NAMES)}"


def _email(name: str, rid: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", ".", name.lower()).strip(".")
    if not name.isascii() or not slug:
        return f"billing{rid}@example.com"
    return f"{slug}.{rid}@example.com"


def _phone(g: Gen) -> str:
    r = g.rng
    return f"({r.randint(200, 989)}) {r.randint(200, 999)}-{r.randint(1000, 9999)}"


def _card(g: Gen, created: int) -> dict[str, Any]:
    return {
        "id": g.next_id("source", 401),
        "object": "card",
        "brand": g.rng.choice(("Visa", "Mastercard", "American Express", "Discover")),
        "last4": f"{g.rng.randint(0, 9999):04d}",
        "exp_month": g.rng.randint(1, 12),
        "exp_year": g.rng.randint(2025, 2031),
        "funding": g.rng.choice(("credit", "debit", "prepaid")),
        "updated_at": created,
    }


def _bank_account(g: Gen, created: int) -> dict[str, Any]:
    return {
        "id": g.next_id("source", 401),
        "object": "bank_account",
        "bank_name": g.rng.choice(("Wells Fargo", "Chase", "Deutsche Bank", "Crédit Agricole")),
        "last4": f"{g.rng.randint(0, 9999):04d}",
        "routing_number": f"{g.rng.randint(10**8, 10**9 - 1)}",
        "verified": g.chance(0.8),
        "updated_at": created,
        "currency": "usd",
    }


def _payment_source(g: Gen, created: int) -> dict[str, Any] | None:
    roll = g.rng.random()
    if roll < 0.45:
        return _card(g, created)
    if roll < 0.6:
        return _bank_account(g, created)
    return None


def _tax_rate_object(g: Gen, rate_id: str, name: str, value: Decimal) -> dict[str, Any]:
    return {
        "id": rate_id,
        "object": "tax_rate",
        "name": name,
        "currency": None,
        "value": num(value),
        "is_percent": True,
        "updated_at": 1_672_617_600,
        "created_at": 1_672_617_600,
        "metadata": {},
        "inclusive": False,
    }


def _coupon_object(code: str, name: str, value: int, is_percent: bool) -> dict[str, Any]:
    return {
        "id": code,
        "object": "coupon",
        "name": name,
        "currency": None if is_percent else "usd",
        "value": value,
        "is_percent": is_percent,
        "updated_at": 1_672_617_600,
        "created_at": 1_672_617_600,
        "metadata": {},
        "exclusive": False,
        "expiration_date": None,
        "max_redemptions": 0,
    }


def _ship_to(g: Gen, probability: float = 0.3) -> dict[str, Any] | None:
    if not g.chance(probability):
        return None
    address1, city, state, postal_code, country = g.rng.choice(ADDRESSES)
    return {
        "name": _person_name(g),
        "attention_to": None,
        "address1": address1,
        "address2": g.rng.choice((None, None, "Suite 200")),
        "city": city,
        "state": state,
        "postal_code": postal_code,
        "country": country,
    }


# --------------------------------------------------------------------------------------------
# Customers
# --------------------------------------------------------------------------------------------


def make_customer(g: Gen, rid: int, created: int) -> dict[str, Any]:
    """A customer like samples/customers.*.json."""
    is_company = g.chance(0.7)
    name = _company_name(g) if is_company else _person_name(g)
    source = _payment_source(g, created)
    autopay = source is not None and g.chance(0.6)
    has_address = g.chance(0.7)
    address1, city, state, postal_code, country = g.rng.choice(ADDRESSES)
    token = g.token()
    sign_up_page = g.rng.randint(2000, 2400) if g.chance(0.1) else None
    taxes = []
    if g.chance(0.1):
        taxes = [_tax_rate_object(g, *g.rng.choice(TAX_RATES))]
    earlier = [cid for cid in g.customer_ids[-50:] if cid < rid]
    return {
        "id": rid,
        "object": "customer",
        "name": name,
        "number": f"CUST-{g.next_id('number:customers'):04d}",
        "email": _email(name, rid) if g.chance(0.9) else None,
        "autopay": autopay,
        "payment_terms": None if autopay else g.rng.choice((*PAYMENT_TERMS, None)),
        "payment_source": source,
        "taxes": taxes,
        "type": "company" if is_company else "person",
        "attention_to": _person_name(g) if is_company and g.chance(0.4) else None,
        "address1": address1 if has_address else None,
        "address2": "Suite 200" if has_address and g.chance(0.2) else None,
        "city": city if has_address else None,
        "state": state if has_address else None,
        "postal_code": postal_code if has_address else None,
        "country": country if has_address or g.chance(0.5) else None,
        "language": g.rng.choice((None, None, "en", "de", "fr", "ja")),
        "currency": g.rng.choice((None, None, "usd", "eur")),
        "tax_id": f"{g.rng.randint(100, 999)}-{g.rng.randint(100000, 999999)}"
        if g.chance(0.3)
        else None,
        "phone": _phone(g) if g.chance(0.6) else None,
        "notes": g.rng.choice(
            (None, None, None, "Prefers e-mail/PDF invoices", "VIP — call first")
        ),
        "sign_up_page": sign_up_page,
        "sign_up_url": f"{TENANT_URL}/sign_up/{token}" if sign_up_page else None,
        "statement_pdf_url": f"{TENANT_URL}/statements/{token}/pdf",
        "updated_at": g.updated(created),
        "created_at": created,
        "metadata": g.metadata(),
        "autopay_delay_days": g.rng.choice((-1, 0, 3)) if autopay else None,
        "avalara_entity_use_code": None,
        "avalara_exemption_number": "EX-1234" if g.chance(0.03) else None,
        "chase": g.chance(0.8),
        "chasing_cadence": g.rng.randint(1, 99) if g.chance(0.3) else None,
        "next_chase_step": g.rng.randint(100, 400) if g.chance(0.2) else None,
        "credit_hold": g.chance(0.05),
        "credit_limit": num(Decimal(g.rng.randint(10, 500) * 100)) if g.chance(0.2) else None,
        "owner": g.rng.randint(1, 20) if g.chance(0.3) else None,
        "parent_customer": g.rng.choice(earlier) if earlier and g.chance(0.05) else None,
        "taxable": g.chance(0.9),
        "ach_gateway": None,
        "cc_gateway": g.rng.randint(200, 240) if source and g.chance(0.3) else None,
    }


# --------------------------------------------------------------------------------------------
# Documents: invoices, credit notes, estimates
# --------------------------------------------------------------------------------------------


def _quantity_and_cost(g: Gen, cost: Decimal | None, usage: bool) -> tuple[Decimal, Decimal]:
    if usage:
        return Decimal(g.rng.randint(1000, 250_000)), cost or Decimal(0)
    if cost is None:
        return Decimal(1), Decimal(g.rng.randint(500, 50_000)) / 100
    quantity = Decimal(g.rng.choice((1, 1, 1, 2, 3, 5, 10, "1.5", "0.25", "7.75")))
    return quantity, cost


def make_discount(g: Gen, kind: str, base: Decimal) -> tuple[dict[str, Any], Decimal]:
    """A discount on `base`: a coupon percentage, a fixed coupon, or a plain amount."""
    coupon = None
    if g.chance(0.6):
        code, name, value, is_percent = g.rng.choice(COUPONS)
        coupon = _coupon_object(code, name, value, is_percent)
        amount = base * value / 100 if is_percent else Decimal(value)
    else:
        amount = Decimal(g.rng.choice((5, 10, 25)))
    amount = min(money(amount), base)
    discount = {
        "id": g.next_id(f"adjustment:{kind}", 20001),
        "object": "discount",
        "amount": num(amount),
        "coupon": coupon,
        "expires": None,
    }
    return discount, amount


def make_tax(g: Gen, kind: str, base: Decimal) -> tuple[dict[str, Any], Decimal]:
    """A tax on `base`, with its rate object or, like the samples, a null rate."""
    rate_id, name, value = g.rng.choice(TAX_RATES)
    amount = money(base * value / 100)
    tax = {
        "id": g.next_id(f"adjustment:{kind}", 20001),
        "object": "tax",
        "amount": num(amount),
        "tax_rate": _tax_rate_object(g, rate_id, name, value) if g.chance(0.5) else None,
    }
    return tax, amount


def make_line_item(g: Gen, kind: str, plan: str | None = None) -> dict[str, Any]:
    """A line item; its id is unique across the object type, like the service's."""
    catalog_item, item_type, name, cost, usage = g.rng.choice(CATALOG)
    quantity, unit_cost = _quantity_and_cost(g, cost, usage)
    amount = money(quantity * unit_cost)
    item: dict[str, Any] = {
        "id": g.next_id(f"line_item:{kind}", 7),
        "object": "line_item",
        "catalog_item": catalog_item,
        "type": item_type,
        "name": name,
        "description": g.rng.choice(DESCRIPTIONS),
        "quantity": num(quantity),
        "unit_cost": num(unit_cost),
        "amount": num(amount),
        "discountable": True,
        "discounts": [],
        "taxable": g.chance(0.9),
        "taxes": [],
        "plan": plan,
        "metadata": g.metadata(0.1),
    }
    if g.chance(0.05) and amount > 0:
        item["discounts"] = [make_discount(g, kind, amount)[0]]
    if g.chance(0.03) and amount > 0:
        item["taxes"] = [make_tax(g, kind, amount)[0]]
    return item


def _adjustments_total(entries: list[dict[str, Any]]) -> Decimal:
    return sum((dec(entry["amount"]) for entry in entries), Decimal(0))


def document_totals(doc: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """(subtotal, total) of a document: items, minus every discount, plus every tax."""
    subtotal = sum((dec(item["amount"]) for item in doc["items"]), Decimal(0))
    discounts = _adjustments_total(doc["discounts"])
    taxes = _adjustments_total(doc["taxes"])
    for item in doc["items"]:
        discounts += _adjustments_total(item["discounts"])
        taxes += _adjustments_total(item["taxes"])
    return subtotal, subtotal - discounts + taxes


def _base_after_item_discounts(doc: dict[str, Any]) -> Decimal:
    subtotal = sum((dec(item["amount"]) for item in doc["items"]), Decimal(0))
    item_discounts = sum(
        (_adjustments_total(item["discounts"]) for item in doc["items"]), Decimal(0)
    )
    return subtotal - item_discounts


def add_document_adjustments(g: Gen, kind: str, doc: dict[str, Any]) -> None:
    """Document-level discounts and taxes, computed on the items."""
    base = _base_after_item_discounts(doc)
    if g.chance(0.1) and base > 0:
        discount, amount = make_discount(g, kind, base)
        doc["discounts"].append(discount)
        base -= amount
    if g.chance(0.4) and base > 0:
        doc["taxes"].append(make_tax(g, kind, base)[0])


def _document_core(g: Gen, kind: str, rid: int, created: int, customer: int) -> dict[str, Any]:
    """The attributes invoices, credit notes and estimates share."""
    items = [make_line_item(g, kind) for _ in range(g.rng.choice((1, 1, 2, 2, 3, 4, 6)))]
    return {
        "id": rid,
        "customer": customer,
        "name": g.rng.choice((None, None, "July Paper Delivery", "Q3 services", "Projekt Ü")),
        "currency": "usd" if g.chance(0.85) else "eur",
        "number": f"{NUMBER_PREFIXES[kind]}-{g.next_id('number:' + kind):04d}",
        "date": g.day(created),
        "purchase_order": f"PO-{g.rng.randint(1000, 99999)}" if g.chance(0.2) else None,
        "items": items,
        "notes": g.rng.choice((None, None, None, "The order was delivered on Jul 20, 2015")),
        "discounts": [],
        "taxes": [],
        "token": g.token(),
        "updated_at": g.updated(created),
        "created_at": created,
        "metadata": g.metadata(0.3),
    }


def _invoice_state(g: Gen, total: Decimal) -> dict[str, Any]:
    roll = g.rng.random()
    if roll < 0.05:
        return {"draft": True, "closed": False, "paid": False, "status": "draft", "balance": total}
    if roll < 0.08:
        return {
            "draft": False,
            "closed": False,
            "paid": False,
            "status": "voided",
            "balance": total,
        }
    if roll < 0.55:
        return {
            "draft": False,
            "closed": True,
            "paid": True,
            "status": "paid",
            "balance": Decimal(0),
        }
    status = g.rng.choice(("not_sent", "sent", "viewed", "past_due", "pending"))
    balance = total if g.chance(0.8) else money(total / 2)
    return {"draft": False, "closed": False, "paid": False, "status": status, "balance": balance}


def _order(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """Lay the attributes out in the samples' order."""
    return {field: values[field] for field in FIELDS[kind] if field in values}


def make_invoice(g: Gen, rid: int, created: int) -> dict[str, Any]:
    """An invoice like samples/invoicing.invoices.object.json."""
    subscription = None
    customer = g.customer_for(created)
    if g.subscription_refs and g.chance(0.08):
        _created, subscription, customer = g.rng.choice(g.subscription_refs)
    doc = _document_core(g, "invoices", rid, created, customer)
    add_document_adjustments(g, "invoices", doc)
    subtotal, total = document_totals(doc)
    state = _invoice_state(g, total)
    terms = g.rng.choice(PAYMENT_TERMS)
    days = int(terms.split()[1]) if terms.startswith("NET") else 0
    autopay = g.chance(0.2)
    open_ = state["status"] not in ("paid", "voided", "draft")
    token = doc.pop("token")
    values = {
        **doc,
        **state,
        "object": "invoice",
        "ship_to": _ship_to(g),
        "autopay": autopay,
        "attempt_count": g.rng.randint(0, 3) if autopay else 0,
        "next_payment_attempt": doc["date"] + 3 * DAY if autopay and open_ else None,
        "subscription": subscription,
        "due_date": None if state["draft"] else doc["date"] + days * DAY,
        "payment_terms": terms,
        "subtotal": num(subtotal),
        "total": num(total),
        "balance": num(state["balance"]),
        "url": f"{TENANT_URL}/invoices/{token}",
        "payment_url": f"{TENANT_URL}/invoices/{token}/payment",
        "pdf_url": f"{TENANT_URL}/invoices/{token}/pdf",
        "payment_plan": g.rng.randint(1, 50) if open_ and g.chance(0.02) else None,
    }
    return _order("invoices", values)


def make_credit_note(g: Gen, rid: int, created: int) -> dict[str, Any]:
    """A credit note like samples/credit_notes.object.json."""
    doc = _document_core(g, "credit_notes", rid, created, g.customer_for(created))
    add_document_adjustments(g, "credit_notes", doc)
    subtotal, total = document_totals(doc)
    status = g.rng.choice(("open", "open", "paid", "closed", "draft", "voided"))
    token = doc.pop("token")
    values = {
        **doc,
        "object": "credit_note",
        "draft": status == "draft",
        "closed": status in ("closed", "paid"),
        "paid": status == "paid",
        "status": status,
        "subtotal": num(subtotal),
        "total": num(total),
        "balance": num(Decimal(0) if status in ("paid", "closed") else total),
        "url": f"{TENANT_URL}/credit_notes/{token}",
        "pdf_url": f"{TENANT_URL}/credit_notes/{token}/pdf",
    }
    return _order("credit_notes", values)


def make_estimate(g: Gen, rid: int, created: int) -> dict[str, Any]:
    """An estimate like samples/estimates.object.json."""
    status = g.rng.choice(
        ("draft", "not_sent", "sent", "viewed", "approved", "declined", "invoiced", "voided")
    )
    invoice = None
    customer = g.customer_for(created)
    if status == "invoiced" and g.pool("invoices"):
        invoice = g.rng.choice(g.pool("invoices"))
        customer = (g.lookup("invoices", invoice) or {}).get("customer", customer)
    doc = _document_core(g, "estimates", rid, created, customer)
    add_document_adjustments(g, "estimates", doc)
    subtotal, total = document_totals(doc)
    deposit = money(total / 4) if g.chance(0.15) else Decimal(0)
    token = doc.pop("token")
    values = {
        **doc,
        "object": "estimate",
        "ship_to": _ship_to(g),
        "invoice": invoice,
        "draft": status == "draft",
        "closed": status in ("invoiced", "declined", "voided"),
        "status": status,
        "payment_terms": g.rng.choice((*PAYMENT_TERMS, None)),
        "subtotal": num(subtotal),
        "total": num(total),
        "deposit": num(deposit),
        "deposit_paid": deposit > 0 and status in ("approved", "invoiced"),
        "url": f"{TENANT_URL}/estimates/{token}",
        "pdf_url": f"{TENANT_URL}/estimates/{token}/pdf",
        "approved": _person_name(g) if status in ("approved", "invoiced") else None,
        "expiration_date": doc["date"] + 30 * DAY if g.chance(0.5) else None,
    }
    return _order("estimates", values)


# --------------------------------------------------------------------------------------------
# Subscriptions
# --------------------------------------------------------------------------------------------

SUBSCRIPTION_STATUSES = (
    ("active", 0.52),
    ("past_due", 0.06),
    ("not_started", 0.03),
    ("pending_renewal", 0.03),
    ("paused", 0.02),
    ("canceled", 0.23),
    ("finished", 0.11),
)


def _subscription_status(g: Gen) -> str:
    roll = g.rng.random()
    for status, share in SUBSCRIPTION_STATUSES:
        roll -= share
        if roll < 0:
            return status
    return "active"


def _addon(g: Gen, created: int) -> dict[str, Any]:
    plan = g.rng.choice(sorted(ADDON_PLANS))
    return {
        "id": g.next_id("addon", 3),
        "object": "subscription_addon",
        "plan": plan,
        "amount": None,
        "quantity": g.rng.randint(1, 12),
        "description": g.rng.choice(("", "", "Extra seats for the Zürich office")),
        "updated_at": created,
        "created_at": created,
    }


def subscription_amounts(sub: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """(recurring_total, mrr): plan and addons per interval, less discounts, plus taxes."""
    price, interval = PLANS[sub["plan"]]
    if sub.get("amount") is not None:
        price = dec(sub["amount"])
    months = 12 if interval == "year" else 1
    base = price * dec(sub["quantity"])
    for addon in sub["addons"]:
        base += ADDON_PLANS[addon["plan"]] * months * dec(addon["quantity"])
    pre_tax = base - _adjustments_total(sub["discounts"])
    total = pre_tax + _adjustments_total(sub["taxes"])
    return money(total), money(pre_tax / months)


def _subscription_periods(g: Gen, status: str, start: int, interval: str) -> dict[str, int | None]:
    """Period, cancellation and contract dates consistent with the status."""
    length = 365 * DAY if interval == "year" else 30 * DAY
    cycles = g.rng.randint(1, 6) if status == "finished" or g.chance(0.3) else None
    end_of_life = END_TS
    canceled_at = None
    if status == "canceled":
        canceled_at = g.rng.randint(start + DAY, max(start + DAY, END_TS))
        end_of_life = canceled_at
    elif status == "finished" and cycles:
        end_of_life = min(END_TS, start + cycles * length)
    elapsed = max(0, (end_of_life - start) // length)
    period_start = start + elapsed * length
    contract = cycles is not None
    return {
        "cycles": cycles,
        "start_date": start,
        "period_start": period_start,
        "period_end": period_start + length,
        "canceled_at": canceled_at,
        "contract_period_start": start if contract else None,
        "contract_period_end": start + (cycles or 0) * length if contract else None,
    }


def make_subscription(g: Gen, rid: int, created: int) -> dict[str, Any]:
    """A subscription like samples/subscriptions.object.json."""
    status = _subscription_status(g)
    plan = g.rng.choice(sorted(PLANS))
    values: dict[str, Any] = {
        "id": rid,
        "object": "subscription",
        "customer": g.customer_for(created),
        "ship_to": _ship_to(g, 0.15),
        "plan": plan,
        "amount": None,
        "quantity": g.rng.choice((1, 1, 1, 2, 5, 10)),
        "cancel_at_period_end": status == "active" and g.chance(0.05),
        "status": status,
        "addons": [_addon(g, created) for _ in range(g.rng.choice((0, 0, 0, 1, 2)))],
        "discounts": [],
        "taxes": [],
        "url": f"{TENANT_URL}/subscriptions/{g.token()}",
        "updated_at": created,
        "created_at": created,
        "metadata": g.metadata(0.3),
        "bill_in": g.rng.choice(("advance", "advance", "arrears")),
        "bill_in_advance_days": 0,
        "contract_renewal_cycles": None,
        "contract_renewal_mode": g.rng.choice(("auto", "manual", "none")),
        "paused": status == "paused",
    }
    if g.chance(0.1):
        values["amount"] = num(PLANS[plan][0] * Decimal("0.9"))
    values.update(_subscription_periods(g, status, created, PLANS[plan][1]))
    if g.chance(0.1):
        values["discounts"].append(make_discount(g, "subscriptions", Decimal(40))[0])
    recurring, _mrr = subscription_amounts(values)
    if g.chance(0.2):
        values["taxes"].append(make_tax(g, "subscriptions", recurring)[0])
    recurring, mrr = subscription_amounts(values)
    values["recurring_total"], values["mrr"] = num(recurring), num(mrr)
    values["updated_at"] = max(values["canceled_at"] or created, g.updated(created))
    return _order("subscriptions", values)


# --------------------------------------------------------------------------------------------
# Payments and credit balance adjustments
# --------------------------------------------------------------------------------------------

# Application types that spend the payment's money (the rest move credit around).
CASH_APPLICATIONS = frozenset({"invoice", "estimate", "convenience_fee", "credit"})


def _application(
    kind: str,
    amount: Decimal,
    invoice: int | None = None,
    estimate: int | None = None,
    credit_note: int | None = None,
    document_type: str | None = None,
) -> dict[str, Any]:
    return {
        "amount": num(amount),
        "type": kind,
        "invoice": invoice,
        "estimate": estimate,
        "credit_note": credit_note,
        "document_type": document_type,
    }


def _invoice_applications(g: Gen, first: dict[str, Any]) -> list[dict[str, Any]]:
    """Applications to one invoice, sometimes with a fee or a credit note beside it."""
    total = dec(first["total"])
    amount = total if g.chance(0.7) else money(total * Decimal(g.rng.choice(("0.5", "0.25"))))
    apps = [_application("invoice", amount, invoice=first["id"])]
    if g.chance(0.05):
        apps.append(_application("convenience_fee", money(amount * Decimal("0.03"))))
    if g.chance(0.03):
        apps.append(
            _application(
                "applied_credit", Decimal(10), invoice=first["id"], document_type="invoice"
            )
        )
    return apps


def _pick_document(g: Gen, listing: str) -> dict[str, Any] | None:
    """A random existing invoice/estimate/credit note, skipping drafts and voided ones."""
    pool = g.pool(listing)
    for _attempt in range(6):
        if not pool:
            return None
        doc = g.lookup(listing, g.rng.choice(pool))
        if doc and doc.get("status") not in ("draft", "voided"):
            return doc
    return None


def _payment_applications(g: Gen) -> tuple[int | None, list[dict[str, Any]]]:
    """(customer, applied_to) for a new payment."""
    roll = g.rng.random()
    if roll < 0.08:
        return None, []  # unmatched bank-feed payment, as in samples/payments.object.json
    if roll < 0.12:
        return g.customer_for(None), [_application("credit", Decimal(g.rng.randint(5, 500)))]
    if roll < 0.15:
        estimate = _pick_document(g, "estimates")
        if estimate:
            deposit = dec(estimate["deposit"]) or money(dec(estimate["total"]) / 4)
            return estimate["customer"], [
                _application("estimate", deposit, estimate=estimate["id"])
            ]
    invoice = _pick_document(g, "invoices")
    if invoice is None:
        return g.customer_for(None), []
    apps = _invoice_applications(g, invoice)
    if g.chance(0.03):
        credit_note = _pick_document(g, "credit_notes")
        if credit_note:
            apps.append(
                _application(
                    "credit_note",
                    min(dec(credit_note["total"]), dec(invoice["total"])),
                    invoice=invoice["id"],
                    credit_note=credit_note["id"],
                    document_type="invoice",
                )
            )
    return invoice["customer"], apps


def _charge(
    g: Gen, customer: int | None, amount: Decimal, created: int, ach: bool
) -> dict[str, Any]:
    source = _bank_account(g, created) if ach else _card(g, created)
    return {
        "amount": num(amount),
        "amount_refunded": 0,
        "created_at": created,
        "updated_at": created,
        "currency": "usd",
        "customer": customer,
        "disputed": False,
        "failure_message": None,
        "gateway": g.rng.choice(("test", "stripe", "invoiced")),
        "gateway_id": "ch_" + g.token(),
        "id": g.next_id("charge", 46001),
        "receipt_email": None,
        "refunded": False,
        "status": "succeeded",
        "payment_source": source,
        "refunds": [],
    }


def payment_balance(payment: dict[str, Any]) -> Decimal:
    """Unapplied money: the amount less the applications that spend it."""
    spent = sum(
        (dec(a["amount"]) for a in payment["applied_to"] if a["type"] in CASH_APPLICATIONS),
        Decimal(0),
    )
    return dec(payment["amount"]) - spent


def make_payment(g: Gen, rid: int, created: int) -> dict[str, Any]:
    """A payment like samples/payments.object.json, plus its `applied_to` applications."""
    customer, apps = _payment_applications(g)
    spent = sum((dec(a["amount"]) for a in apps if a["type"] in CASH_APPLICATIONS), Decimal(0))
    unapplied = Decimal(g.rng.randint(1, 300)) if not apps or g.chance(0.1) else Decimal(0)
    amount = spent + unapplied
    method = g.rng.choice(("credit_card", "ach", "check", "wire_transfer", "cash", "other"))
    charged = customer is not None and method in ("credit_card", "ach")
    values = {
        "amount": num(amount),
        "balance": num(unapplied),
        "created_at": created,
        "charge": _charge(g, customer, amount, created, method == "ach") if charged else None,
        "currency": "usd",
        "customer": customer,
        "date": created - g.rng.randint(0, 3600),
        "id": rid,
        "matched": customer is not None or g.chance(0.5),
        "method": method,
        "notes": g.rng.choice((None, None, None, "Paid via lockbox/scan", "Remittance #12")),
        "object": "payment",
        "reference": f"{g.rng.randint(1000, 999999)}" if method == "check" else None,
        "ach_sender_id": f"ACH{g.rng.randint(1000, 9999)}" if method == "ach" else None,
        "source": g.rng.choice(("api", "bank_feed", "keyed", "customer_portal", "imported")),
        "voided": g.chance(0.02),
        "updated_at": g.updated(created),
        "pdf_url": f"{TENANT_URL}/payments/{g.token()}/pdf",
        "applied_to": apps,
    }
    return values


def make_credit_balance_adjustment(g: Gen, rid: int, created: int) -> dict[str, Any]:
    """A credit balance adjustment; like the sample, ~20% carry no `updated_at` at all."""
    amount = (
        Decimal(g.rng.choice((25, 50, 100, 250)))
        if g.chance(0.6)
        else money(Decimal(g.rng.randint(100, 90_000)) / 100)
    )
    if g.chance(0.15):
        amount = -amount
    values: dict[str, Any] = {
        "amount": num(amount),
        "created_at": created,
        "currency": "usd",
        "customer": g.customer_for(created),
        "date": created,
        "id": rid,
        "notes": g.rng.choice((None, None, "Goodwill credit", "Refund of overpayment/duplicate")),
        "object": "credit_balance_adjustment",
    }
    if g.chance(0.8):
        values["updated_at"] = g.updated(created)
    return values


# --------------------------------------------------------------------------------------------
# Catalog: plans, items, coupons, tax rates (string ids, no events)
# --------------------------------------------------------------------------------------------

CATALOG_CREATED = (START_TS - 400 * DAY, END_TS - DAY)
"""Catalog objects exist before most customers; they are created over this range."""

PLAN_STEMS = (
    "basic", "starter", "growth", "team", "pro", "business", "premium", "enterprise", "scale",
    "nonprofit", "edu", "partner", "agency", "startup", "plus", "ultimate", "lite", "standard",
)  # fmt: skip
# cadence suffix -> (interval, interval_count, label)
PLAN_CADENCES: dict[str, tuple[str, int, str]] = {
    "monthly": ("month", 1, "monthly"),
    "annual": ("year", 1, "annual"),
    "quarterly": ("month", 3, "quarterly"),
    "weekly": ("week", 1, "weekly"),
    "daily": ("day", 1, "daily"),
}
PLAN_NAME_VARIANTS = ("{stem} ({label})", "{stem} — {label}", "Plan {stem} ({label})")
ITEM_STEMS: dict[str, tuple[str, str]] = {  # id stem -> (type, name)
    "copy-paper": ("product", "Copy Paper"),
    "stapler": ("product", "Stapler"),
    "desk-chair": ("product", "Desk Chair"),
    "license": ("product", "Software License"),
    "seat": ("service", "User Seat"),
    "training": ("hours", "Training"),
    "setup-fee": ("service", "Setup Fee"),
    "hosting": ("service", "Hosting"),
    "backup": ("usage", "Backups (GB)"),
    "audit": ("service", "Audit — Prüfung"),
    "translation": ("hours", "Translation / Übersetzung"),
    "shipping": ("service", "Shipping & Handling"),
    "installation": ("service", "Installation"),
    "maintenance": ("service", "Maintenance"),
    "workshop": ("service", "Workshop"),
    "print-job": ("usage", "Print jobs"),
    "mileage": ("expense", "Mileage"),
    "lunch": ("expense", "Client lunch"),
}
ITEM_VARIANTS = ("a4", "letter", "xl", "basic", "pro", "eu", "us", "2024", "v2", "onsite")
COUPON_PREFIXES = (
    "WELCOME", "SPRING", "SUMMER", "FALL", "WINTER", "BF", "CYBER", "LOYAL", "PARTNER",
    "NONPROFIT", "EDU", "VIP", "REFER", "LAUNCH",
)  # fmt: skip
COUPON_VALUES = (5, 10, 15, 20, 25, 30, 50, 100)
# tax rate id -> (name, percent)
TAX_RATE_CATALOG: dict[str, tuple[str, Decimal]] = {
    "vat-de": ("MwSt. 19 %", Decimal("19")),
    "vat-de-reduced": ("MwSt. 7 %", Decimal("7")),
    "vat-fr": ("TVA", Decimal("20")),
    "vat-gb": ("VAT (UK)", Decimal("20")),
    "vat-it": ("IVA", Decimal("22")),
    "vat-es": ("IVA (ES)", Decimal("21")),
    "vat-nl": ("BTW", Decimal("21")),
    "vat-at": ("USt. Österreich", Decimal("20")),
    "vat-ie": ("VAT (IE)", Decimal("23")),
    "vat-se": ("Moms", Decimal("25")),
    "vat-dk": ("Moms (DK)", Decimal("25")),
    "vat-pl": ("VAT (PL)", Decimal("23")),
    "vat-fi": ("ALV", Decimal("24")),
    "sales-tax-ny": ("NY Sales Tax", Decimal("4")),
    "sales-tax-tx": ("TX Sales Tax", Decimal("6.25")),
    "sales-tax-wa": ("WA Sales Tax", Decimal("6.5")),
    "sales-tax-nj": ("NJ Sales Tax", Decimal("6.625")),
    "sales-tax-ma": ("MA Sales Tax", Decimal("6.25")),
    "hst-on": ("HST (Ontario)", Decimal("13")),
    "pst-bc": ("PST (British Columbia)", Decimal("7")),
    "qst": ("QST (Québec)", Decimal("9.975")),
    "consumption-tax-jp": ("消費税", Decimal("10")),
    "gst-au": ("GST (Australia)", Decimal("10")),
    "recycling-fee": ("Recycling fee", Decimal("2.5")),
}
CATALOG_ITEM_IDS = tuple(item_id for item_id, *_rest in CATALOG if item_id is not None)


def fixed_catalog_ids(listing: str) -> tuple[str, ...]:
    """Catalog ids that the other objects reference (subscriptions' plans, line items' catalog
    items, discounts' coupons, taxes' rates): always generated, never archived at generation,
    and spared by deletions while other rows can go instead."""
    if listing == "plans":
        return (*PLANS, *ADDON_PLANS)
    if listing == "items":
        return CATALOG_ITEM_IDS
    if listing == "coupons":
        return tuple(code for code, *_rest in COUPONS)
    return tuple(rate_id for rate_id, *_rest in TAX_RATES)


def _unique(candidate: str, taken: set[str] | dict[str, Any]) -> str:
    """`candidate`, or `candidate-2`, `candidate-3`, ... if taken (codes: `CODEB`, `CODEC`, ...)."""
    if candidate not in taken:
        return candidate
    number = 2
    while True:
        if candidate.isupper() and number <= 26:
            option = candidate + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[number - 1]
        else:
            option = f"{candidate}-{number}"
        if option not in taken:
            return option
        number += 1


def new_catalog_id(g: Gen, listing: str, taken: set[str] | dict[str, Any]) -> str:
    """A fresh user-chosen id, like the ones accounts use."""
    r = g.rng
    if listing == "plans":
        candidate = f"{r.choice(PLAN_STEMS)}-{r.choice(sorted(PLAN_CADENCES))}"
    elif listing == "items":
        stem = r.choice(sorted(ITEM_STEMS))
        candidate = stem if g.chance(0.4) else f"{stem}-{r.choice(ITEM_VARIANTS)}"
    elif listing == "coupons":
        candidate = f"{r.choice(COUPON_PREFIXES)}{r.choice(COUPON_VALUES)}"
        if g.chance(0.2):
            candidate += str(r.randint(2021, 2025))
    else:
        candidate = r.choice(sorted(TAX_RATE_CATALOG))
    return _unique(candidate, taken)


def _catalog_times(g: Gen, created: int | None) -> tuple[int, int]:
    """(created_at, updated_at): random over the catalog's range unless given."""
    if created is None:
        created = g.rng.randint(*CATALOG_CREATED)
        return created, g.updated(created)
    return created, created


def _tiers(g: Gen) -> list[dict[str, Any]]:
    """Tiers in the reference's shape: no `min_qty` on the first, no `max_qty` on the last."""
    bounds = sorted(g.rng.sample(range(10, 1000, 10), g.rng.randint(1, 3)))
    cost = Decimal(g.rng.choice((100, 50, 20, 12, 10)))
    tiers: list[dict[str, Any]] = []
    lower: int | None = None
    for upper in [*bounds, None]:
        tier: dict[str, Any] = {}
        if lower is not None:
            tier["min_qty"] = lower + 1
        if upper is not None:
            tier["max_qty"] = upper
        tier["unit_cost"] = num(cost)
        tiers.append(tier)
        lower, cost = upper, money(cost * Decimal("0.8"))
    return tiers


def make_plan(g: Gen, plan_id: str, created: int | None = None) -> dict[str, Any]:
    """A plan like samples/plans.object.json; a quarter are tiered or volume-priced."""
    created, updated = _catalog_times(g, created)
    stem, _, cadence = plan_id.partition("-")
    interval, interval_count, label = PLAN_CADENCES.get(
        cadence.split("-")[0], ("month", 1, "monthly")
    )
    pricing_mode = "per_unit" if g.chance(0.75) else g.rng.choice(("tiered", "volume"))
    amount = None
    if pricing_mode == "per_unit":
        amount = num(Decimal(g.rng.choice((9, 19, 29, 49, 99, 149, 299, 999))) * interval_count)
        if interval == "year":
            amount = num(dec(amount) * 10)
    name = g.rng.choice(PLAN_NAME_VARIANTS).format(stem=stem.title(), label=label)
    values = {
        "id": plan_id,
        "object": "plan",
        "name": name,
        "currency": "usd" if g.chance(0.85) else "eur",
        "amount": amount,
        "interval": interval,
        "interval_count": interval_count,
        "catalog_item": g.rng.choice(CATALOG_ITEM_IDS) if g.chance(0.3) else None,
        "updated_at": updated,
        "created_at": created,
        "metadata": g.metadata(0.2),
        "pricing_mode": pricing_mode,
        "quantity_type": "constant" if g.chance(0.8) else "usage",
        "tiers": None if pricing_mode == "per_unit" else _tiers(g),
        "archived": False,
    }
    if plan_id in PLANS:  # the plans subscriptions are on: their real prices
        price, interval = PLANS[plan_id]
        values.update(amount=num(price), interval=interval, interval_count=1, currency="usd")
        values.update(pricing_mode="per_unit", tiers=None, name=plan_id.replace("-", " ").title())
    elif plan_id in ADDON_PLANS:
        values.update(amount=num(ADDON_PLANS[plan_id]), interval="month", interval_count=1)
        values.update(currency="usd", pricing_mode="per_unit", tiers=None)
        values["name"] = plan_id.replace("-", " ").title()
    return _order("plans", values)


def make_item(g: Gen, item_id: str, created: int | None = None) -> dict[str, Any]:
    """A catalog item like samples/items.object.json."""
    created, updated = _catalog_times(g, created)
    stem = max((s for s in ITEM_STEMS if item_id.startswith(s)), key=len, default=None)
    item_type, name = ITEM_STEMS[stem] if stem else ("service", item_id.title())
    variant = item_id[len(stem) + 1 :] if stem else ""
    if variant:
        name = f"{name} ({variant.upper()})"
    unit_cost = Decimal(g.rng.randint(100, 250_000)) / 100
    if item_type == "usage":
        unit_cost = Decimal(g.rng.choice(("0.0025", "0.01", "0.125", "0.5")))
    taxes = []
    if g.chance(0.1):
        taxes = [_tax_rate_object(g, *g.rng.choice(TAX_RATES))]
    values = {
        "id": item_id,
        "object": "item",
        "name": name,
        "currency": "usd" if g.chance(0.85) else "eur",
        "unit_cost": num(unit_cost),
        "description": g.rng.choice(DESCRIPTIONS),
        "type": item_type,
        "taxes": taxes,
        "gl_account": g.rng.choice((None, None, "4000", "4100-services")),
        "discountable": g.chance(0.9),
        "taxable": g.chance(0.85),
        "avalara_tax_code": "SW054000" if g.chance(0.05) else None,
        "avalara_location_code": None,
        "updated_at": updated,
        "created_at": created,
        "metadata": g.metadata(0.2),
        "archived": False,
    }
    fixed = next((entry for entry in CATALOG if entry[0] == item_id), None)
    if fixed is not None:  # the catalog items line items point at: their names and prices
        _id, item_type, name, cost, _usage = fixed
        values.update(type=item_type, name=name, currency="usd")
        if cost is not None:
            values["unit_cost"] = num(cost)
    return _order("items", values)


def make_coupon(g: Gen, code: str, created: int | None = None) -> dict[str, Any]:
    """A coupon like samples/coupons.object.json."""
    for fixed_code, name, value, is_percent in COUPONS:
        if code == fixed_code:  # the same object discounts embed
            return _coupon_object(fixed_code, name, value, is_percent)
    created, updated = _catalog_times(g, created)
    # PREFIX + value [+ year] [+ letters that made it unique], as new_catalog_id builds codes.
    match = re.fullmatch(r"([A-Z]+)(\d+)[A-Z]*", code)
    prefix, digits = (match.group(1), match.group(2)) if match else (code, "10")
    if len(digits) > 4 and digits[-4:-2] == "20":
        digits = digits[:-4]
    value = int(digits) if 0 < int(digits) <= 100 else 10
    is_percent = value <= 50 and g.chance(0.75)
    values = {
        "id": code,
        "object": "coupon",
        "name": f"{prefix.title()} {value}{'%' if is_percent else ' USD'}",
        "currency": None if is_percent else "usd",
        "value": value,
        "is_percent": is_percent,
        "updated_at": updated,
        "created_at": created,
        "metadata": g.metadata(0.1),
        "exclusive": g.chance(0.2),
        "expiration_date": created + g.rng.randint(30, 365) * DAY if g.chance(0.3) else None,
        "max_redemptions": g.rng.choice((0, 0, 0, 10, 100, 500)),
    }
    return _order("coupons", values)


def make_tax_rate(g: Gen, rate_id: str, created: int | None = None) -> dict[str, Any]:
    """A tax rate like samples/tax_rates.object.json."""
    for fixed_id, name, value in TAX_RATES:
        if rate_id == fixed_id:  # the same object taxes embed
            return _tax_rate_object(g, fixed_id, name, value)
    created, updated = _catalog_times(g, created)
    base = rate_id if rate_id in TAX_RATE_CATALOG else rate_id.rsplit("-", 1)[0]
    name, value = TAX_RATE_CATALOG.get(base, (rate_id.upper(), Decimal("5")))
    is_percent = base != "recycling-fee"
    values = {
        "id": rate_id,
        "object": "tax_rate",
        "name": name,
        "currency": None if is_percent else "usd",
        "value": num(value),
        "is_percent": is_percent,
        "updated_at": updated,
        "created_at": created,
        "metadata": g.metadata(0.1),
        "inclusive": rate_id.startswith("vat-") and g.chance(0.3),
    }
    return _order("tax_rates", values)


CATALOG_MAKERS: dict[str, Callable[[Gen, str, int | None], dict[str, Any]]] = {
    "plans": make_plan,
    "items": make_item,
    "coupons": make_coupon,
    "tax_rates": make_tax_rate,
}


# --------------------------------------------------------------------------------------------
# Notes and tasks
# --------------------------------------------------------------------------------------------

USERS: tuple[dict[str, Any], ...] = (
    {"created_at": 1563810757, "email": "invoiced@example.com", "first_name": "John",
     "id": 1946, "last_name": "Smith", "two_factor_enabled": True, "registered": True},
    {"created_at": 1571347283, "email": "pam.beesly@example.com", "first_name": "Pam",
     "id": 1976, "last_name": "Beesly", "two_factor_enabled": False, "registered": True},
    {"created_at": 1580000000, "email": "dwight@example.com", "first_name": "Dwight",
     "id": 2011, "last_name": "Schrute", "two_factor_enabled": True, "registered": True},
    {"created_at": 1600000000, "email": "angela@example.com", "first_name": "Angela",
     "id": 2044, "last_name": "Martin", "two_factor_enabled": False, "registered": True},
    {"created_at": 1650000000, "email": "oscar@example.com", "first_name": "Óscar",
     "id": 2102, "last_name": "Martínez", "two_factor_enabled": True, "registered": True},
    {"created_at": 1660000000, "email": "kevin@example.com", "first_name": "Kevin",
     "id": 2150, "last_name": "Malone", "two_factor_enabled": False, "registered": False},
)  # fmt: skip
NOTE_TEXTS = (
    "Customer called 10/1, clarified account terms.",
    "Left voicemail; will follow up next week.",
    "Promised payment by Friday — check is in the mail.",
    "Kunde bittet um Rechnung per Post (Büro München).",
    "請求書を再送しました。",
    'AP contact says "invoice not received", resent PDF.',
    "Escalated to Jan/Dwight for approval.",
    "Payment plan agreed:\n- 50% now\n- 50% in 30 days",
    "Disputed line 3 (delivery fee). Credit note pending.",
    "Zoë asked for W-9 🚀",
)
TASK_ACTIONS: dict[str, str] = {
    "phone": "Call customer",
    "email": "Send reminder email",
    "letter": "Mail statement letter",
    "review": "Review account — Mahnstufe 2",
}


def make_note(g: Gen, rid: int, created: int) -> dict[str, Any]:
    """A note on a customer, sometimes on one of its invoices (samples from the reference)."""
    customer = g.customer_for(created)
    invoice = None
    if g.chance(0.35):
        invoice, customer = g.invoice_for(created) or (None, customer)
    return {
        "id": rid,
        "object": "note",
        "customer": customer,
        "invoice": invoice,
        "notes": g.rng.choice(NOTE_TEXTS),
        "user": dict(g.rng.choice(USERS)) if g.chance(0.8) else None,
        "created_at": created,
        "updated_at": g.updated(created),
    }


def make_task(g: Gen, rid: int, created: int) -> dict[str, Any]:
    """A collection task like samples/tasks.object.json (`customer_id`, `user_id`: integers)."""
    action = g.rng.choice(sorted(TASK_ACTIONS))
    due_date = created - created % DAY + 5 * 3600 + g.rng.randint(0, 14) * DAY
    complete = due_date < END_TS and g.chance(0.6)
    completed_date = min(END_TS, due_date + g.rng.randint(0, 5) * DAY) if complete else None
    completed_date = max(created, completed_date) if completed_date else None
    values = {
        "action": action,
        "chase_step_id": g.rng.randint(100, 400) if g.chance(0.3) else None,
        "complete": complete,
        "completed_by_user_id": g.rng.choice(USERS)["id"] if complete else None,
        "completed_date": completed_date,
        "updated_at": completed_date or g.updated(created),
        "created_at": created,
        "customer_id": g.customer_for(created),
        "due_date": due_date,
        "id": rid,
        "name": TASK_ACTIONS[action],
        "user_id": g.rng.choice(USERS)["id"] if g.chance(0.7) else None,
    }
    return values


# --------------------------------------------------------------------------------------------
# Customers' contacts and payment sources
# --------------------------------------------------------------------------------------------

CONTACT_TITLES = (None, None, "CFO", "AP Clerk", "Buchhaltung", "Office Manager", "Owner")
CONTACT_DEPARTMENTS = (None, None, None, "Finance", "Accounts Payable", "Einkauf")


def make_contact(
    g: Gen, rid: int, created: int, customer: int, primary: bool = False
) -> dict[str, Any]:
    """A contact like samples/contacts.object.json, plus the `customer_id` the service sends."""
    name = _person_name(g)
    has_address = g.chance(0.3)
    address1, city, state, postal_code, country = g.rng.choice(ADDRESSES)
    return {
        "id": rid,
        "object": "contact",
        "name": name,
        "title": g.rng.choice(CONTACT_TITLES),
        "email": _email(name, rid) if g.chance(0.85) else None,
        "phone": _phone(g) if g.chance(0.5) else None,
        "primary": primary,
        "sms_enabled": g.rng.choice((None, None, True, False)),
        "department": g.rng.choice(CONTACT_DEPARTMENTS),
        "address1": address1 if has_address else None,
        "address2": None,
        "city": city if has_address else None,
        "state": state if has_address else None,
        "postal_code": postal_code if has_address else None,
        "country": country if has_address else None,
        "updated_at": g.updated(created),
        "created_at": created,
        "customer_id": customer,
    }


# Why a source can no longer be charged, per kind (in the words card and ACH gateways use).
FAILURE_REASONS: dict[str, tuple[str, ...]] = {
    "card": (
        "Your card was declined.",
        "Your card has expired.",
        "Your card has insufficient funds.",
        "Your card's security code is incorrect.",
    ),
    "bank_account": (
        "The bank account could not be verified.",
        "The bank account has been closed.",
        "The payment was returned: insufficient funds (R01).",
    ),
}
UNCHARGEABLE_SHARE = 0.15  # enough that at scale 1 and 5 several customers have hidden sources


def set_chargeable(g: Gen, source: dict[str, Any], chargeable: bool) -> None:
    """`chargeable` and its `failure_reason` (null while the source can be charged)."""
    source["chargeable"] = chargeable
    source["failure_reason"] = (
        None if chargeable else g.rng.choice(FAILURE_REASONS[source["object"]])
    )


def make_payment_source(g: Gen, rid: int, created: int) -> dict[str, Any]:
    """A card (samples/sources.cards.object.json) or a bank account (.bank_accounts.), with
    `chargeable` and `failure_reason` as the card in samples/events.object.json has them."""
    source = _card(g, created) if g.chance(0.65) else _bank_account(g, created)
    source["id"] = rid  # ids are unique across both kinds
    set_chargeable(g, source, not g.chance(UNCHARGEABLE_SHARE))
    return source


MAKERS: dict[str, Callable[[Gen, int, int], dict[str, Any]]] = {
    "customers": make_customer,
    "subscriptions": make_subscription,
    "invoices": make_invoice,
    "credit_notes": make_credit_note,
    "estimates": make_estimate,
    "payments": make_payment,
    "credit_balance_adjustments": make_credit_balance_adjustment,
    "notes": make_note,
    "tasks": make_task,
}


# --------------------------------------------------------------------------------------------
# Mutations of existing records
# --------------------------------------------------------------------------------------------


def recompute_document(kind: str, doc: dict[str, Any], old_total: Decimal) -> None:
    """Refresh a document's totals after its items changed.

    Document taxes keep their effective rate; a paid amount (total - balance) stays paid.
    """
    old_base = dec(doc["subtotal"]) - _adjustments_total(doc["discounts"])
    for item in doc["items"]:
        old_base -= _adjustments_total(item["discounts"])
    base = _base_after_item_discounts(doc)
    for discount in doc["discounts"]:
        amount = min(dec(discount["amount"]), max(base, Decimal(0)))
        discount["amount"] = num(amount)
        base -= amount
    for tax in doc["taxes"]:
        rate = dec(tax["amount"]) / old_base if old_base > 0 else Decimal(0)
        tax["amount"] = num(money(base * rate))
    subtotal, total = document_totals(doc)
    doc["subtotal"], doc["total"] = num(subtotal), num(total)
    if kind == "estimates":
        doc["deposit"] = num(min(dec(doc["deposit"]), total))
        return
    paid_so_far = old_total - dec(doc["balance"])
    balance = max(Decimal(0), total - paid_so_far)
    doc["balance"] = num(balance)
    if kind == "invoices" and not doc["draft"] and doc["status"] != "voided":
        doc["paid"] = balance == 0
        doc["closed"] = doc["paid"]
        if doc["paid"]:
            doc["status"] = "paid"
        elif doc["status"] == "paid":
            doc["status"] = "sent"


def update_document(g: Gen, kind: str, doc: dict[str, Any]) -> None:
    """Edit notes/metadata and add or remove a line item, keeping totals consistent."""
    old_total = dec(doc["total"])
    doc["notes"] = f"Revised {g.rng.randint(1, 999)}: see attached/updated terms"
    if len(doc["items"]) > 1 and g.chance(0.4):
        doc["items"].pop(g.rng.randrange(len(doc["items"])))
    else:
        doc["items"].append(make_line_item(g, kind))
    if g.chance(0.3):
        doc["metadata"] = {**doc["metadata"], **g.metadata(1.0)}
    recompute_document(kind, doc, old_total)


def update_customer(g: Gen, customer: dict[str, Any]) -> None:
    choice = g.rng.randrange(3)
    if choice == 0:
        customer["name"] = _company_name(g) if customer["type"] == "company" else _person_name(g)
    elif choice == 1:
        customer["email"] = f"accounts.{customer['id']}.{g.rng.randint(1, 99)}@example.com"
    customer["notes"] = g.rng.choice(("Moved to NET 30", "Changed billing contact", None))
    customer["metadata"] = {**customer["metadata"], **g.metadata(1.0)}


def update_subscription(g: Gen, sub: dict[str, Any], timestamp: int) -> None:
    """Cancel live subscriptions half of the time; otherwise change the quantity."""
    if sub["status"] not in ("canceled", "finished") and g.chance(0.5):
        sub["status"] = "canceled"
        sub["canceled_at"] = timestamp
        sub["cancel_at_period_end"] = False
        return
    sub["quantity"] = int(dec(sub["quantity"])) + g.rng.randint(1, 3)
    recurring, mrr = subscription_amounts(sub)
    sub["recurring_total"], sub["mrr"] = num(recurring), num(mrr)
    sub["metadata"] = {**sub["metadata"], **g.metadata(1.0)}


def update_payment(g: Gen, payment: dict[str, Any]) -> None:
    payment["notes"] = f"Reconciled batch {g.rng.randint(1, 9999)}"
    payment["matched"] = True
    if payment["customer"] is not None and payment_balance(payment) > 0 and g.chance(0.5):
        payment["applied_to"].append(_application("credit", payment_balance(payment)))
    payment["balance"] = num(payment_balance(payment))


def update_credit_balance_adjustment(g: Gen, adjustment: dict[str, Any]) -> None:
    adjustment["notes"] = g.rng.choice(("Corrected amount", "Goodwill credit (revised)"))
    adjustment["amount"] = num(dec(adjustment["amount"]) + g.rng.randint(1, 20))


def update_catalog(g: Gen, listing: str, record: dict[str, Any]) -> None:
    """Rename, reprice or retag a catalog object; plans and items get archived or restored."""
    if listing in ARCHIVABLE_LISTINGS and g.chance(0.35):
        record["archived"] = not record["archived"]
        return
    if listing == "plans" and record["amount"] is not None and g.chance(0.5):
        record["amount"] = num(dec(record["amount"]) + g.rng.randint(1, 20))
    elif listing == "items" and g.chance(0.5):
        record["unit_cost"] = num(money(dec(record["unit_cost"]) * Decimal("1.05")))
    elif listing == "coupons" and g.chance(0.5):
        record["max_redemptions"] = g.rng.choice((0, 50, 250, 1000))
    else:
        record["name"] = f"{record['name'].split(' (rev')[0]} (rev {g.rng.randint(2, 99)})"
    record["metadata"] = {**record["metadata"], **g.metadata(0.5)}


def update_note(g: Gen, note: dict[str, Any]) -> None:
    note["notes"] = g.rng.choice(NOTE_TEXTS) + f"\nUpdate {g.rng.randint(1, 999)}: déjà vu"


def update_task(g: Gen, task: dict[str, Any], timestamp: int) -> None:
    """Complete an open task; otherwise push its due date and reassign it."""
    if not task["complete"]:
        task["complete"], task["completed_date"] = True, timestamp
        task["completed_by_user_id"] = g.rng.choice(USERS)["id"]
        return
    task["due_date"] += 7 * DAY
    task["user_id"] = g.rng.choice(USERS)["id"]


def update_contact(g: Gen, contact: dict[str, Any]) -> None:
    choice = g.rng.randrange(3)
    if choice == 0:
        contact["title"] = g.rng.choice(CONTACT_TITLES[2:])
    elif choice == 1:
        contact["phone"] = _phone(g)
    contact["email"] = f"contact.{contact['id']}.{g.rng.randint(1, 99)}@example.com"


def update_payment_source(g: Gen, source: dict[str, Any]) -> None:
    """A card gets a new expiry; a bank account is verified (or unverified). A third of the
    updates flip `chargeable` instead: a source that fails is hidden from its customer's
    listing, and one that is fixed (a new card number, a re-verified account) shows again."""
    if g.chance(0.35):
        set_chargeable(g, source, not source["chargeable"])
    elif source["object"] == "card":
        source["exp_month"] = g.rng.randint(1, 12)
        source["exp_year"] = int(source["exp_year"]) + g.rng.randint(1, 4)
    else:
        source["verified"] = not source["verified"]


def update_record(g: Gen, listing: str, record: dict[str, Any], timestamp: int) -> None:
    """Change some fields of a record in place, then stamp it with `timestamp`."""
    if listing in ("invoices", "credit_notes", "estimates"):
        update_document(g, listing, record)
    elif listing == "customers":
        update_customer(g, record)
    elif listing == "subscriptions":
        update_subscription(g, record, timestamp)
    elif listing == "payments":
        update_payment(g, record)
    elif listing == "credit_balance_adjustments":
        update_credit_balance_adjustment(g, record)
    elif listing in CATALOG_LISTINGS:
        update_catalog(g, listing, record)
    elif listing == "notes":
        update_note(g, record)
    elif listing == "tasks":
        update_task(g, record, timestamp)
    elif listing == "contacts":
        update_contact(g, record)
    else:
        update_payment_source(g, record)
    record["updated_at"] = timestamp


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`data.previous` of an update event: the old values of the attributes that changed."""
    return {key: old.get(key) for key, value in new.items() if old.get(key) != value}


# --------------------------------------------------------------------------------------------
# The account
# --------------------------------------------------------------------------------------------


def scaled_counts(scale: float) -> dict[str, int]:
    """Records per listing at `scale` (at least one of each; the catalog grows with its root).

    Contacts and payment sources are drawn per customer (CONTACTS_PER_CUSTOMER, ...).
    """
    counts = {listing: max(1, round(base * scale)) for listing, base in BASE_COUNTS.items()}
    counts.update(
        {listing: max(1, round(base * scale)) for listing, base in EXTRA_BASE_COUNTS.items()}
    )
    for listing, base in CATALOG_BASE_COUNTS.items():
        fixed = len(fixed_catalog_ids(listing))
        counts[listing] = max(fixed, round(base * math.sqrt(scale)))
    return counts


class Dataset:
    """The emulated account: every listing's rows, and thread-safe mutations of them.

    `lock` guards all reads and writes; readers hold it only while choosing rows, which are
    immutable once built (a mutation replaces a Row, it never edits one).
    """

    def __init__(self, scale: float = 1.0, seed: int = 1) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale
        self.seed = seed
        self.lock = threading.RLock()
        self.tables: dict[str, Table] = {listing: Table(listing) for listing in LISTINGS}
        # The children of customers and invoices again, per (listing, parent attribute) and
        # parent id: what /customers/{id}/... and /invoices/{id}/notes serve, and what a
        # parent's deletion takes with it.
        self.indexes: dict[tuple[str, str], dict[Any, Table]] = {index: {} for index in INDEXES}
        self._gen = Gen(random.Random(seed))
        self._gen.customer_ids = self.tables["customers"].ids
        self._gen.pool = self._pool
        self._gen.lookup = self._lookup
        self._last_timestamp = START_TS
        counts = scaled_counts(scale)
        self._generate(counts)
        customer_created = self._gen.customer_created or []
        # Mutations draw from their own stream so that they do not depend on generation details.
        self._gen.rng = random.Random(f"invoiced-emulator-mutations:{seed}")
        self._gen.customer_created = None
        self._generate_extras(counts, customer_created)
        self._mutation_gens: dict[str, Gen] = {}

    # -- generation ------------------------------------------------------------------------

    def _pool(self, listing: str) -> list[int]:
        return self.tables[listing].ids

    def _lookup(self, listing: str, rid: int) -> dict[str, Any] | None:
        row = self.tables[listing].rows.get(rid)
        return row.parse() if row else None

    def _timestamps(self, count: int, start: int) -> list[int]:
        rng = self._gen.rng
        return sorted(rng.randint(start, END_TS - DAY) for _ in range(count))

    def _ids(self, listing: str, count: int) -> Iterator[int]:
        rng = self._gen.rng
        rid = FIRST_IDS[listing]
        for _ in range(count):
            yield rid
            rid += rng.choice((1, 1, 1, 2, 3))  # the service's ids have gaps

    def _generate(self, counts: dict[str, int]) -> None:
        """The original listings and their creation events, from `random.Random(seed)`."""
        g = self._gen
        for listing in GENERATION_ORDER:
            # Customers come first in time so that later objects have someone to point at.
            start = START_TS if listing == "customers" else START_TS + 30 * DAY
            created_list = self._timestamps(counts[listing], start)
            table = self.tables[listing]
            for rid, created in zip(self._ids(listing, counts[listing]), created_list, strict=True):
                record = MAKERS[listing](g, rid, created)
                table.add(record_row(listing, record))
                self._after_generated(listing, record)
        self._generate_events()

    def _after_generated(self, listing: str, record: dict[str, Any]) -> None:
        """Feed the reference pools later listings draw from."""
        g = self._gen
        if listing == "customers" and g.customer_created is not None:
            g.customer_created.append(record["created_at"])
        elif listing == "subscriptions":
            g.subscription_refs.append((record["created_at"], record["id"], record["customer"]))

    def _generate_events(self) -> None:
        """One `<object>.created` event per record, ids increasing with time.

        The customers they expand are as generated: every customer exists by then.
        """
        order = {listing: index for index, listing in enumerate(GENERATION_ORDER)}
        subjects = sorted(
            (row.created_at, order[listing], row.id, listing)
            for listing in GENERATION_ORDER
            for row in self.tables[listing].rows.values()
        )
        events = self.tables["events"]
        event_id = FIRST_IDS["events"]
        for created, _order, rid, listing in subjects:
            subject = self.tables[listing].rows[rid]
            customer = self._customer_bytes(listing, subject)
            events.add(event_row(event_id, listing, "created", created, subject, None, customer))
            event_id += self._gen.rng.choice((1, 1, 2, 5))

    def _stream(self, name: str, customer_created: list[int] | None = None) -> Gen:
        """A generator on its own random stream, wired to the customers (and their ages)."""
        g = Gen(random.Random(f"{self.seed}:{name}"))
        g.customer_ids = self.tables["customers"].ids
        g.customer_created = customer_created
        g.pool = self._pool
        g.lookup = self._lookup
        return g

    def _generate_extras(self, counts: dict[str, int], customer_created: list[int]) -> None:
        """The listings added after the original seven, each from its own stream, then their
        creation events after the original ones."""
        for listing in CATALOG_LISTINGS:
            self._generate_catalog(listing, counts[listing])
        invoices = self.tables["invoices"]
        for listing in ("notes", "tasks"):
            g = self._stream(listing, customer_created)
            if listing == "notes":
                g.invoice_refs = sorted(
                    (row.created_at, row.id, row.customer) for row in invoices.rows.values()
                )
            created_list = sorted(
                g.rng.randint(START_TS + 30 * DAY, END_TS - DAY) for _ in range(counts[listing])
            )
            rid = FIRST_IDS[listing]
            for created in created_list:
                self._store(listing, record_row(listing, MAKERS[listing](g, rid, created)))
                rid += g.rng.choice((1, 1, 1, 2, 3))
        self._generate_children("contacts", CONTACTS_PER_CUSTOMER)
        self._generate_children("payment_sources", SOURCES_PER_CUSTOMER)
        self._generate_extra_events()
        for table in self.tables.values():
            for row in table.rows.values():
                self._last_timestamp = max(
                    self._last_timestamp, row.created_at, row.updated_at or 0
                )

    def _generate_catalog(self, listing: str, count: int) -> None:
        """The ids other objects reference, then fresh user-chosen ids; 20% of the plans and
        items archived (never the referenced ones, as far as there are others)."""
        g = self._stream(f"catalog:{listing}")
        fixed = fixed_catalog_ids(listing)
        records = {rid: CATALOG_MAKERS[listing](g, rid, None) for rid in fixed}
        while len(records) < count:
            rid = new_catalog_id(g, listing, records)
            records[rid] = CATALOG_MAKERS[listing](g, rid, None)
        if listing in ARCHIVABLE_LISTINGS:
            others = sorted(set(records) - set(fixed))
            for rid in g.rng.sample(others, min(len(others), round(0.2 * len(records)))):
                records[rid]["archived"] = True
        table = self.tables[listing]
        for rid in sorted(records):
            table.add(record_row(listing, records[rid]))

    def _generate_children(self, listing: str, per_customer: tuple[int, ...]) -> None:
        """Each customer's contacts (the first one primary) or payment sources, created after
        the customer; ids rise with creation time across all customers."""
        g = self._stream(listing)
        customers = self.tables["customers"]
        pending: list[tuple[int, int, int, dict[str, Any]]] = []
        for customer in customers.ids:
            born = customers.rows[customer].created_at
            for index in range(g.rng.choice(per_customer)):
                created = born if index == 0 else g.rng.randint(born, END_TS - DAY)
                if listing == "contacts":
                    record = make_contact(g, 0, created, customer, primary=index == 0)
                else:
                    record = make_payment_source(g, 0, created)
                pending.append((created, customer, index, record))
        pending.sort(key=lambda entry: entry[:3])
        rid = FIRST_IDS[listing]
        for _created, customer, _index, record in pending:
            record["id"] = rid
            if listing == "contacts" and record["email"] is not None:
                record["email"] = _email(record["name"], rid)
            self._store(listing, record_row(listing, record, parent=customer))
            rid += g.rng.choice((1, 1, 1, 2, 3))

    def _generate_extra_events(self) -> None:
        """Creation events of notes, tasks, contacts and payment sources, in time order, after
        the original ones."""
        evented = ("notes", "tasks", "contacts", "payment_sources")
        order = {listing: index for index, listing in enumerate(evented)}
        subjects = sorted(
            (row.created_at, order[listing], row.id, listing)
            for listing in evented
            for row in self.tables[listing].rows.values()
        )
        rng = random.Random(f"{self.seed}:events")
        events = self.tables["events"]
        event_id = events.max_id() + rng.choice((1, 1, 2, 5))
        for created, _order, rid, listing in subjects:
            subject = self.tables[listing].rows[rid]
            customer = self._customer_bytes(listing, subject)
            events.add(event_row(event_id, listing, "created", created, subject, None, customer))
            event_id += rng.choice((1, 1, 2, 5))

    # -- storage with the per-parent indexes -----------------------------------------------

    def _store(self, listing: str, row: Row) -> None:
        """Add a row whose id is above every id so far, to its table and its parents' indexes."""
        self.tables[listing].add(row)
        for parent in PARENTS.values():
            self._index_add(listing, parent, row)

    def _restore(self, listing: str, row: Row) -> None:
        """Replace a row (same id) in its table and its parents' indexes."""
        table = self.tables[listing]
        old = table.rows[row.id]
        table.replace(row)
        for parent in PARENTS.values():
            children = self.indexes.get((listing, parent))
            if children is None:
                continue
            if getattr(old, parent) == getattr(row, parent):
                if getattr(row, parent) is not None:
                    children[getattr(row, parent)].replace(row)
            else:  # moved to another parent: out of one index table, into the other
                if getattr(old, parent) is not None:
                    children[getattr(old, parent)].remove(row.id)
                self._index_add(listing, parent, row, anywhere=True)

    def _unstore(self, listing: str, rid: Any) -> Row:
        """Remove a row from its table and its parents' indexes."""
        row = self.tables[listing].remove(rid)
        for parent in PARENTS.values():
            children = self.indexes.get((listing, parent))
            # An emptied index table stays: its version keeps counting for the Pager's caches.
            if children is not None and getattr(row, parent) is not None:
                children[getattr(row, parent)].remove(rid)
        return row

    def _index_add(self, listing: str, parent: str, row: Row, anywhere: bool = False) -> None:
        children = self.indexes.get((listing, parent))
        key = getattr(row, parent)
        if children is None or key is None:
            return
        if key not in children:
            children[key] = Table(listing)
        if anywhere:
            children[key].insert(row)
        else:
            children[key].add(row)

    def children(self, listing: str, parent: str, parent_id: Any) -> Table:
        """The rows of `listing` whose `parent` ("customer" or "invoice") is `parent_id`.

        An empty table when there are none, whether or not the parent exists: the service does
        not look the parent up. A customer's notes include those on its invoices. Call with
        `lock` held; the table is live (do not keep it past the lock).
        """
        table = self.indexes[(listing, parent)].get(parent_id)
        return table if table is not None else Table(listing)

    def _customer_bytes(self, listing: str, subject: Row) -> bytes | None:
        """The bytes the customers listing sends now for the customer an event expands."""
        if listing not in EXPANDED_LISTINGS or subject.customer is None:
            return None
        customer = self.tables["customers"].rows.get(subject.customer)
        # Gone (a document outlives its deleted customer): the event keeps the id.
        return customer.listing_blob if customer is not None else None

    # -- reading ---------------------------------------------------------------------------

    def truth(self) -> dict[str, int]:
        """Row count of every listing, everything included: archived plans and items too, and
        contacts and payment sources (hidden ones too) of every customer."""
        with self.lock:
            return {listing: len(self.tables[listing]) for listing in LISTINGS}

    def table(self, listing: str) -> Table:
        if listing not in self.tables:
            raise KeyError(f"unknown listing {listing!r}; known: {', '.join(LISTINGS)}")
        return self.tables[listing]

    def records_bytes(self, listing: str) -> bytes:
        """Every record of a listing, full form, by ascending id, as one JSON array.

        Records are exactly what the API sends, but for payment sources, which come with a
        `"customer": <id>` key (last) naming the customer they are listed under, which the API
        does not send. Contacts carry their `customer_id` themselves.
        """
        with self.lock:
            table = self.table(listing)
            if listing in ANONYMOUS_LISTINGS:
                blobs = [table.rows[rid].with_customer for rid in table.ids]
            else:
                blobs = [table.rows[rid].blob for rid in table.ids]
            return b"[" + b",".join(blobs) + b"]"

    def records(self, listing: str) -> list[dict[str, Any]]:
        """Every record of a listing as parsed JSON, full form, by ascending id.

        Ids are strings for plans, items, coupons and tax rates (sorted as strings). Plans and
        items include the archived ones (`archived: true`), payment sources the hidden ones
        (`chargeable: false`). Payment sources are those of every customer, each with an added
        `"customer"` key (see `records_bytes`).
        """
        return json.loads(self.records_bytes(listing))

    # -- mutations -------------------------------------------------------------------------

    def timestamp_after(self, moment: int) -> None:
        """Later mutations are timestamped after `moment` (UNIX seconds)."""
        with self.lock:
            self._last_timestamp = max(self._last_timestamp, moment)

    def _next_timestamp(self) -> int:
        """A timestamp strictly after everything so far, so `updated_after` always sees it."""
        self._last_timestamp = max(int(time.time()), self._last_timestamp + 1)
        return self._last_timestamp

    def _add_event(
        self, listing: str, action: str, timestamp: int, subject: Row, **kw: Any
    ) -> None:
        if listing in EVENTLESS_LISTINGS:
            return
        events = self.tables["events"]
        event_id = events.max_id() + 1
        customer = self._customer_bytes(listing, subject)
        events.add(
            event_row(event_id, listing, action, timestamp, subject, customer=customer, **kw)
        )

    def _mutation_gen(self, listing: str) -> Gen:
        """The original listings share one mutation stream (as they always have); each newer
        listing has its own, so that mutating it never changes what later calls do to others."""
        if listing in ORIGINAL_LISTINGS:
            return self._gen
        g = self._mutation_gens.get(listing)
        if g is None:
            g = self._stream(f"invoiced-emulator-mutations:{listing}")
            self._mutation_gens[listing] = g
        return g

    def mutate(
        self, listing: str, *, insert: int = 0, update: int = 0, delete: int = 0
    ) -> dict[str, Any]:
        """Insert, update and delete records of one listing, recording their events.

        Which records change depends only on the seed and the sequence of calls. Contacts and
        payment sources are inserted on random existing customers. Deleting a customer deletes
        its contacts, notes (those on its invoices too), tasks and payment sources, and deleting
        an invoice its notes, with no event for any of them (the service's foreign keys do it);
        the answer then lists them under "cascaded", by listing. Plans, items, coupons and tax
        rates record no events; updating plans or items may archive or restore them, updating
        payment sources may make them unchargeable (hidden) or chargeable again.
        """
        if listing not in RECORD_LISTINGS:
            raise ValueError(
                f"cannot mutate {listing!r}; choose one of {', '.join(RECORD_LISTINGS)}"
            )
        if min(insert, update, delete) < 0:
            raise ValueError("insert, update and delete must be >= 0")
        with self.lock:
            g = self._mutation_gen(listing)
            timestamp = self._next_timestamp()
            table = self.tables[listing]
            existing = list(table.ids)
            inserted = self._insert(g, listing, insert, timestamp)
            updated = self._update(g, listing, existing, update, timestamp)
            changed = set(updated)
            untouched = [rid for rid in existing if rid not in changed]
            cascaded: dict[str, list[Any]] = {child: [] for child in CHILDREN.get(listing, ())}
            deleted = self._delete(g, listing, untouched, delete, timestamp, cascaded)
        result: dict[str, Any] = {"inserted": inserted, "updated": updated, "deleted": deleted}
        if listing in CHILDREN:
            result["cascaded"] = {child: sorted(ids) for child, ids in cascaded.items()}
        return result

    def _insert(self, g: Gen, listing: str, count: int, timestamp: int) -> list[Any]:
        if listing in CATALOG_LISTINGS:
            return self._insert_catalog(g, listing, count, timestamp)
        if listing in CUSTOMER_LISTINGS:
            return self._insert_children(g, listing, count, timestamp)
        table = self.tables[listing]
        ids = []
        for _ in range(count):
            rid = table.max_id() + g.rng.choice((1, 1, 2))
            record = MAKERS[listing](g, rid, timestamp)
            if "updated_at" in record:  # some adjustments carry none, like the sample's
                record["updated_at"] = timestamp
            if listing == "subscriptions":
                self._activate(record)
            row = record_row(listing, record)
            self._store(listing, row)
            self._add_event(listing, "created", timestamp, row)
            ids.append(rid)
        return ids

    def _insert_catalog(self, g: Gen, listing: str, count: int, timestamp: int) -> list[Any]:
        """New user-chosen ids: they sort anywhere among the existing ones."""
        table = self.tables[listing]
        ids = []
        for _ in range(count):
            rid = new_catalog_id(g, listing, table.rows)
            table.insert(record_row(listing, CATALOG_MAKERS[listing](g, rid, timestamp)))
            ids.append(rid)
        return ids

    def _insert_children(self, g: Gen, listing: str, count: int, timestamp: int) -> list[Any]:
        table = self.tables[listing]
        customers = self.tables["customers"].ids
        ids = []
        for _ in range(count if customers else 0):
            customer = g.rng.choice(customers)
            rid = table.max_id() + g.rng.choice((1, 1, 2))
            if listing == "contacts":
                primary = not self.children(listing, "customer", customer)
                record = make_contact(g, rid, timestamp, customer, primary=primary)
                record["updated_at"] = timestamp
            else:
                record = make_payment_source(g, rid, timestamp)
            row = record_row(listing, record, parent=customer)
            self._store(listing, row)
            self._add_event(listing, "created", timestamp, row)
            ids.append(rid)
        return ids

    @staticmethod
    def _activate(sub: dict[str, Any]) -> None:
        """A subscription created now is live."""
        sub["status"], sub["canceled_at"], sub["paused"] = "active", None, False

    def _update(
        self, g: Gen, listing: str, pool: list[Any], count: int, timestamp: int
    ) -> list[Any]:
        table = self.tables[listing]
        chosen = sorted(g.rng.sample(pool, min(count, len(pool))))
        for rid in chosen:
            current = table.rows[rid]
            old = current.parse()
            new = current.parse()
            update_record(g, listing, new, timestamp)
            # A child's customer is left as it was (its parent is not an attribute it changes).
            row = record_row(listing, new, parent=current.customer)
            self._restore(listing, row)
            self._add_event(listing, "updated", timestamp, row, previous=changed_fields(old, new))
        return chosen

    def _protected(self, listing: str) -> set[Any]:
        """Ids that deletions spare while they can: documents payments apply to (deleting
        those would dangle references) and catalog objects other records name."""
        if listing in CATALOG_LISTINGS:
            return set(fixed_catalog_ids(listing))
        key = {"invoices": "invoice", "credit_notes": "credit_note", "estimates": "estimate"}
        if listing not in key:
            return set()
        referenced = set()
        for row in self.tables["payments"].rows.values():
            for app in row.parse()["applied_to"]:
                if app[key[listing]] is not None:
                    referenced.add(app[key[listing]])
        return referenced

    def _delete(
        self,
        g: Gen,
        listing: str,
        pool: list[Any],
        count: int,
        timestamp: int,
        cascaded: dict[str, list[Any]],
    ) -> list[Any]:
        protected = self._protected(listing) if count else set()
        free = [rid for rid in pool if rid not in protected]
        candidates = free if len(free) >= count else pool
        chosen = sorted(g.rng.sample(candidates, min(count, len(candidates))))
        for rid in chosen:
            row = self._unstore(listing, rid)
            self._add_event(listing, "deleted", timestamp, row)
            if listing in CHILDREN:
                self._delete_children(listing, rid, cascaded)
        return chosen

    def _delete_children(self, listing: str, rid: Any, cascaded: dict[str, list[Any]]) -> None:
        """A deleted customer's contacts, notes, tasks and payment sources (an invoice's notes)
        go with it, as the service's foreign keys take them: no events. `cascaded` collects
        their ids per listing."""
        parent = PARENTS[listing]
        for child in CHILDREN[listing]:
            children = self.indexes[(child, parent)].get(rid)
            for child_id in list(children.ids) if children is not None else []:
                self._unstore(child, child_id)
                cascaded[child].append(child_id)
