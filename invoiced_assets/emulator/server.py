"""HTTP front of the Invoiced emulator: the REST API, fault injection and a control API.

The API side reproduces what Invoiced's backend does (see /work/shared/invoiced-api/README.md):
Basic auth with the key as user name; bare JSON arrays; `page`/`per_page` (clamped to 1-100,
default 100); `X-Total-Count` computed on page 1 and cached for the rest of the walk; RFC 5988
`Link` headers with absolute URLs; a server-side cursor in natural order, with the 400 refusal
of un-walked pages at offset >= 10,000; offset paging with `sort`; hidden canceled/finished
subscriptions; `include=applied_to` on payments; strict query parameters on customers and
payments; and a cap on concurrent requests per key answered with 429 and no Retry-After.

Plans, items, coupons and tax rates have string ids (pages continue after the last id string)
and ignore `updated_after`; plans and items list only unarchived rows unless `archived=1`, which
lists only the archived ones.

Per-customer and per-invoice listings answer as the service's routes do:
- `/customers/{id}/contacts`, `/customers/{id}/notes`, `/customers/{id}/tasks` and
  `/invoices/{id}/notes` never look the parent up: a customer or invoice that does not exist (or
  was deleted) has `200 []`. A customer's notes are its own (not those on its invoices), newest
  first whatever `sort` says. A contact is retrieved at `/customers/{id}/contacts/{contact}`.
- `/customers/{id}/payment_sources` does look the customer up (404 `Customer was not found:
  <id>`). Its body is never sliced: every page holds every matching source, while
  `X-Total-Count` and `Link` are computed as for any listing. Sources that cannot be charged
  are hidden unless `include_hidden` is truthy.
- Any other path is 404 `Request was not recognized: GET <path>`: a wrong request, not a
  missing customer. Contacts and payment sources have no top-level listing; `/notes` and
  `/tasks` list every note and task.

Every request chooses its rows under the dataset's one lock, so choosing them must be cheap, as
a database's indexes make it for the service: a date window is read from the table's date index,
and a walk's matching rows are kept per table version, each page sliced from them by cursor
(scanning the table for every page held the lock for most of a run's walk of date windows).

`/_emulator/*` is the unauthenticated control API (truth, records, mutations, faults, stats) for
other processes; faults, latency and the concurrency cap never apply to it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import random
import socket
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from invoiced_assets.emulator.data import (
    ARCHIVABLE_LISTINGS,
    CATALOG_LISTINGS,
    CHILDREN,
    CUSTOMER_LISTINGS,
    DATED_LISTINGS,
    EVENT_OBJECTS,
    FIELDS,
    HUMAN_NAMES,
    LISTINGS,
    NESTED_FIELDS,
    PARENTS,
    TOP_LEVEL_LISTINGS,
    Dataset,
    Row,
    Table,
    dec,
    dumps,
)

FAULT_KINDS: tuple[str, ...] = (
    "500_json",
    "502_html",
    "503_html",
    "drop",
    "429_retry_after",
    "429_no_retry_after",
    "truncated_json",
)

DEFAULT_PER_PAGE = 100
CURSOR_REQUIRED_OFFSET = 10_000
CACHE_TTL_SECONDS = 300.0  # the service keeps cursors and counts for five minutes

# Query parameters the service's option resolver defines; anything else is a 400 there.
_BASE_PARAMS = frozenset(
    {"expand", "exclude", "include", "per_page", "page", "sort", "paginate", "filter"}
    | {"advanced_filter", "updated_before", "updated_after", "automation", "metadata"}
)
STRICT_PARAMS: dict[str, frozenset[str]] = {
    "customers": _BASE_PARAMS
    | {"owner", "open_balance", "balance", "payment_source", "late_fee_schedule_id"},
    "payments": _BASE_PARAMS | {"balance", "amount", "start_date", "end_date"},
}


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultConfig:
    """Misbehaviour to inject into API requests (never into /_emulator/*).

    latency_ms: sleep added to every API request, while it counts as in flight.
    fault_rate: fraction of API requests answered with one of `fault_kinds` instead.
    retry_after_seconds: Retry-After of the `429_retry_after` fault, written as given.
    max_in_flight: concurrent API requests per key above which the answer is 429 (<= 0: no cap).
    fault_seed: seed of the fault dice, so that a run's faults repeat.
    """

    latency_ms: float = 0
    fault_rate: float = 0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    retry_after_seconds: float = 1
    max_in_flight: int = 20
    fault_seed: int = 0

    def __post_init__(self) -> None:
        # Accept a list (JSON has no tuples) but store a tuple so the config stays hashable.
        object.__setattr__(self, "fault_kinds", tuple(self.fault_kinds))
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        if not 0 <= self.fault_rate <= 1:
            raise ValueError("fault_rate must be between 0 and 1")
        if self.fault_rate > 0 and not self.fault_kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        if self.latency_ms < 0 or self.retry_after_seconds < 0:
            raise ValueError("latency_ms and retry_after_seconds must be >= 0")

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> FaultConfig:
        unknown = set(payload) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown FaultConfig fields {sorted(unknown)}")
        return cls(**payload)

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["fault_kinds"] = list(self.fault_kinds)
        return values


def seconds_text(value: float) -> str:
    """Write a number of seconds as given: 1 -> "1", 0.01 -> "0.01"."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


# --------------------------------------------------------------------------------------------
# Responses and errors
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


DROP = Response(status=0, body=b"")
"""Sentinel: close the connection without answering."""


class ApiError(Exception):
    """An error answered as the service does: {"type", "message"[, "param"]}."""

    def __init__(
        self, status: int, message: str, type_: str = "invalid_request", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param

    def response(self) -> Response:
        payload = {"type": self.type, "message": self.message}
        if self.param is not None:
            payload["param"] = self.param
        return Response(self.status, dumps(payload))


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(payload).encode())


def html_response(status: int) -> Response:
    """An HTML error page, as a load balancer in front of the service sends."""
    phrase = HTTPStatus(status).phrase
    body = (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Response(status, body.encode(), content_type="text/html")


def fault_response(kind: str, faults: FaultConfig) -> Response:
    """The answer of every fault kind except `truncated_json`, which needs the real answer."""
    if kind == "500_json":
        return ApiError(
            500, "An unexpected error occurred. Please try again.", "api_error"
        ).response()
    if kind in ("502_html", "503_html"):
        return html_response(int(kind[:3]))
    if kind == "drop":
        return DROP
    response = ApiError(429, "Too many requests. Please slow down.", "rate_limit_error").response()
    if kind == "429_retry_after":
        response.headers.append(("Retry-After", seconds_text(faults.retry_after_seconds)))
    return response


def truncate(response: Response) -> Response:
    """The same answer with its body cut in half (and a Content-Length that matches the cut)."""
    return Response(
        response.status, response.body[: len(response.body) // 2], response.content_type,
        response.headers,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Query parsing
# --------------------------------------------------------------------------------------------


def php_int(text: str | None) -> int:
    """PHP's (int) cast of a string: the leading integer, or 0."""
    text = (text or "").strip()
    sign = -1 if text.startswith("-") else 1
    digits = ""
    for char in text.lstrip("+-"):
        if not char.isdigit():
            break
        digits += char
    return sign * int(digits) if digits else 0


def php_truthy(text: str | None) -> bool:
    """PHP's truthiness of a query string value."""
    return text not in (None, "", "0")


def parent_id(raw_id: str) -> int | None:
    """The id of a parent in a path (`/customers/{id}/...`); None when it cannot be one."""
    return int(raw_id) if raw_id.isdigit() else None


def split_param(name: str) -> tuple[str, str | None]:
    """`filter[status]` -> ("filter", "status"); `page` -> ("page", None)."""
    if name.endswith("]") and "[" in name:
        base, _, key = name[:-1].partition("[")
        return base, key
    return name, None


class RowView:
    """A row's field values: hot fields from the Row, the rest from the parsed record (once)."""

    __slots__ = ("_doc", "listing", "row")

    def __init__(self, listing: str, row: Row) -> None:
        self.listing, self.row, self._doc = listing, row, None

    def get(self, name: str) -> Any:
        row = self.row
        if name == "id":
            return row.id
        if self.listing == "events":
            fast = {"timestamp": row.date, "type": row.event_type, "object": "event"}
            if name in fast:
                return fast[name]
        elif name in ("created_at", "updated_at", "date", "status", "customer"):
            return getattr(row, name)
        if self._doc is None:
            self._doc = row.parse()
        return self._doc.get(name)

    def updated(self) -> int:
        """updated_at, falling back to created_at where the object has none."""
        return self.row.updated_at if self.row.updated_at is not None else self.row.created_at


Predicate = Callable[[RowView], bool]


def value_matches(value: Any, wanted: str) -> bool:
    """Does a record value equal a query-string value, compared the way SQL would?"""
    if value is None:
        return wanted in ("", "null")
    if isinstance(value, bool):
        return wanted.lower() in (("1", "true") if value else ("0", "false", ""))
    if isinstance(value, int | float):
        try:
            return dec(value) == dec(wanted)
        except ArithmeticError:
            return False
    return isinstance(value, str) and value == wanted


@dataclass
class ListQuery:
    """A parsed listing request."""

    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    predicates: list[Predicate] = field(default_factory=list)
    include_applied_to: bool = False
    # start_date/end_date (inclusive, on `date`; 0: not given), answered from the table's date
    # index rather than by a predicate on every row.
    start_date: int = 0
    end_date: int = 0

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def cursor_direction(self, listing: str) -> bool | None:
        """Descending flag when ordered solely by id (cursor paging applies), else None."""
        sort = self.sort or [("id", listing == "events")]  # events are newest first
        if len(sort) == 1 and sort[0][0] == "id":
            return sort[0][1]
        return None

    @property
    def dated(self) -> bool:
        """Whether start_date or end_date narrows the rows (read from the date index)."""
        return self.start_date > 0 or self.end_date > 0

    @property
    def matches_every_row(self) -> bool:
        """Whether the query keeps every row of the table (no predicate, no date range)."""
        return not self.predicates and not self.dated

    def predicate(self, listing: str) -> Callable[[Row], bool] | None:
        """Whether a row matches the predicates (the date range aside: see `matching_rows`)."""
        if not self.predicates:
            return None
        predicates = self.predicates

        def matches(row: Row) -> bool:
            view = RowView(listing, row)
            return all(predicate(view) for predicate in predicates)

        return matches


def filterable_fields(listing: str) -> frozenset[str]:
    return frozenset(FIELDS[listing]) - NESTED_FIELDS


def check_strict_params(listing: str, params: dict[str, str]) -> None:
    """Customers and payments refuse parameters they do not define, as Symfony's resolver does."""
    allowed = STRICT_PARAMS.get(listing)
    if allowed is None:
        return
    unknown = sorted({split_param(name)[0] for name in params} - allowed)
    if not unknown:
        return
    defined = ", ".join(f"'{name}'" for name in sorted(allowed))
    quoted = ", ".join(f"'{name}'" for name in unknown)
    if len(unknown) == 1:
        message = f"The option {quoted} does not exist. Defined options are: {defined}."
    else:
        message = f"The options {quoted} do not exist. Defined options are: {defined}."
    raise ApiError(400, message, param="query")


def parse_sort(listing: str, text: str) -> list[tuple[str, bool]]:
    sort = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, direction = part.partition(" ")
        direction = direction.strip().lower() or "asc"
        if name not in filterable_fields(listing) or direction not in ("asc", "desc"):
            raise ApiError(400, f"Invalid sort parameter: {part}", param="sort")
        sort.append((name, direction == "desc"))
    return sort


def field_predicates(listing: str, params: dict[str, str]) -> list[Predicate]:
    """filter[FIELD]=VALUE (exact match on a top-level field) and metadata[KEY]=VALUE."""
    predicates: list[Predicate] = []
    for name, value in params.items():
        base, key = split_param(name)
        if base == "filter" and key is not None:
            if key not in filterable_fields(listing):
                raise ApiError(400, f"Invalid filter parameter: {key}", param="filter")
            predicates.append(lambda v, k=key, w=value: value_matches(v.get(k), w))
        elif base == "metadata" and key is not None:
            predicates.append(
                lambda v, k=key, w=value: (v.get("metadata") or {}).get(k) == w  # type: ignore[misc]
            )
    return predicates


def time_predicates(listing: str, params: dict[str, str]) -> list[Predicate]:
    """updated_after/updated_before (strict; see `date_range` for start_date/end_date).

    The events route has no updated_* parameters, and the catalog's listings ignore them.
    """
    predicates: list[Predicate] = []
    if listing != "events" and listing not in CATALOG_LISTINGS:
        after, before = php_int(params.get("updated_after")), php_int(params.get("updated_before"))
        if after > 0:
            predicates.append(lambda v: v.updated() > after)
        if before > 0:
            predicates.append(lambda v: v.updated() < before)
    return predicates


def date_range(listing: str, params: dict[str, str]) -> tuple[int, int]:
    """start_date and end_date (inclusive, on `date`; events: on `timestamp`), 0 when absent."""
    if listing in DATED_LISTINGS or listing == "events":
        return max(0, php_int(params.get("start_date"))), max(0, php_int(params.get("end_date")))
    return 0, 0


def subscription_predicates(params: dict[str, str]) -> list[Predicate]:
    """Without all=1 only subscriptions whose canceled/finished flags equal the parameters'.

    As in the service's query builder: canceled=1 lists the canceled ones (and no live ones),
    finished=1 the finished ones; no flag lists the live ones only.
    """
    predicates: list[Predicate] = []
    if not php_truthy(params.get("all")):
        canceled, finished = php_truthy(params.get("canceled")), php_truthy(params.get("finished"))
        predicates.append(
            lambda v: (
                (v.row.status == "canceled") == canceled
                and (v.row.status == "finished") == finished
            )
        )
    plan = params.get("plan")
    if plan:
        predicates.append(
            lambda v: v.get("plan") == plan or any(a["plan"] == plan for a in v.get("addons"))
        )
    return predicates


def archived_predicates(params: dict[str, str]) -> list[Predicate]:
    """Plans and items: the unarchived ones, or with archived=1 only the archived ones."""
    archived = php_truthy(params.get("archived"))
    return [lambda v: bool(v.row.archived) == archived]


def event_predicates(params: dict[str, str]) -> list[Predicate]:
    """related_to=OBJECT,ID (the object's events, and for customers their documents' too)."""
    predicates: list[Predicate] = []
    related = params.get("related_to", "").split(",")
    if len(related) == 2:
        subject = "transaction" if related[0] == "credit_balance_adjustment" else related[0]
        if subject not in EVENT_OBJECTS.values():
            raise ApiError(400, f"Object type not recognized: {related[0]}", param="related_to")
        rid = php_int(related[1])
        predicates.append(
            lambda v: (
                (v.row.subject == subject and v.row.subject_id == rid)
                or (subject == "customer" and v.row.customer == rid)
            )
        )
    object_type = params.get("type")
    if object_type:
        wanted = "transaction" if object_type == "credit_balance_adjustment" else object_type
        predicates.append(lambda v: v.row.subject == wanted)
    return predicates


def parse_list_query(listing: str, params: dict[str, str]) -> ListQuery:
    """Validate and parse a listing's query parameters."""
    check_strict_params(listing, params)
    query = ListQuery()
    # PHP: a falsy per_page ("", "0") keeps the default; anything else is cast then clamped.
    if php_truthy(params.get("per_page")):
        query.per_page = max(1, min(DEFAULT_PER_PAGE, php_int(params["per_page"])))
    query.page = max(1, php_int(params.get("page")))
    query.sort = parse_sort(listing, params.get("sort", ""))
    query.predicates = field_predicates(listing, params) + time_predicates(listing, params)
    query.start_date, query.end_date = date_range(listing, params)
    if listing == "subscriptions":
        query.predicates += subscription_predicates(params)
    if listing in ARCHIVABLE_LISTINGS:
        query.predicates += archived_predicates(params)
    if listing == "events":
        query.predicates += event_predicates(params)
    if listing == "payment_sources" and not php_truthy(params.get("include_hidden")):
        # Sources that can no longer be charged; a customer has at most a few, parsed cheaply.
        query.predicates.append(lambda v: v.get("chargeable") is not False)
    query.include_applied_to = "applied_to" in params.get("include", "").split(",")
    return query


# --------------------------------------------------------------------------------------------
# Row selection
# --------------------------------------------------------------------------------------------


def matching_rows(listing: str, table: Table, query: ListQuery) -> list[Row]:
    """Every row the query matches, by ascending id (a date range read from the date index)."""
    ids = table.ids
    if query.dated:
        dates, dated_ids = table.by_date()
        low = bisect_left(dates, query.start_date) if query.start_date > 0 else 0
        high = bisect_right(dates, query.end_date) if query.end_date > 0 else len(dates)
        ids = sorted(dated_ids[low:high])
    candidates = [table.rows[rid] for rid in ids]
    matches = query.predicate(listing)
    return candidates if matches is None else [row for row in candidates if matches(row)]


def sort_key(value: Any) -> tuple[bool, Any]:
    """NULLs first, as MySQL sorts them ascending."""
    return (value is not None, value if value is not None else 0)


def sorted_rows(listing: str, table: Table, query: ListQuery) -> list[Row]:
    """Every matching row in `sort` order (ties by ascending id)."""
    views = [RowView(listing, row) for row in matching_rows(listing, table, query)]
    for name, descending in reversed(query.sort):
        views.sort(key=lambda v, n=name: sort_key(v.get(n)), reverse=descending)  # type: ignore[misc]
    return [view.row for view in views]


class TtlCache:
    """A bounded LRU of values that expire, for pagination cursors and cached counts."""

    def __init__(self, capacity: int, ttl: float = CACHE_TTL_SECONDS) -> None:
        self.capacity, self.ttl = capacity, ttl
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] < time.monotonic():
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


class Pager:
    """Chooses a listing page the way the service does, with its cursor and count caches."""

    def __init__(self) -> None:
        self.cursors = TtlCache(200_000)
        self.totals = TtlCache(20_000)
        # Sorted orders per walk and table version: a sorted walk sorts once, not once a page,
        # yet any change to the table makes the next page see live data, as offsets do.
        self.orders = TtlCache(64)
        # The rows each walk matches, per table version: its pages slice them by cursor (as a
        # database walks an index) instead of scanning the table again for every page.
        self.matches = TtlCache(256)

    def page(
        self, listing: str, table: Table, query: ListQuery, walk: tuple[Any, ...]
    ) -> tuple[list[Row], int]:
        """(rows of the page, X-Total-Count). Call with the dataset lock held."""
        descending = query.cursor_direction(listing)
        if descending is None:
            rows = self.orders.get((walk, table.version))
            if rows is None:
                rows = sorted_rows(listing, table, query)
                self.orders.put((walk, table.version), rows)
            selected = rows[query.offset : query.offset + query.per_page]
        else:
            selected = self._cursor_page(listing, table, query, walk, descending)
        return selected, self._total(listing, table, query, walk)

    def every(
        self, listing: str, table: Table, query: ListQuery, walk: tuple[Any, ...]
    ) -> tuple[list[Row], int]:
        """(every matching row, X-Total-Count): the unsliced body of a customer's payment
        sources, whose count is computed (and cached) as page() computes it."""
        return sorted_rows(listing, table, query), self._total(listing, table, query, walk)

    def _cursor_page(
        self, listing: str, table: Table, query: ListQuery, walk: tuple[Any, ...], desc: bool
    ) -> list[Row]:
        offset = query.offset
        cursor = self.cursors.get((walk, offset)) if offset > 0 else None
        if cursor is None and offset >= CURSOR_REQUIRED_OFFSET:
            raise ApiError(
                400, "You must retrieve all preceding page numbers before retrieving this page."
            )
        skip = 0 if cursor is not None else offset
        ids = self._matching(listing, table, query, walk)
        if desc:  # ids below the cursor, highest first
            stop = (bisect_left(ids, cursor) if cursor is not None else len(ids)) - skip
            chosen = ids[max(0, stop - query.per_page) : max(0, stop)][::-1]
        else:  # ids above the cursor, lowest first
            start = (bisect_right(ids, cursor) if cursor is not None else 0) + skip
            chosen = ids[start : start + query.per_page]
        selected = [table.rows[rid] for rid in chosen]
        if selected:
            # The next page of this walk continues after this page's last id.
            self.cursors.put((walk, query.page * query.per_page), selected[-1].id)
        return selected

    def _matching(
        self, listing: str, table: Table, query: ListQuery, walk: tuple[Any, ...]
    ) -> list[Any]:
        """The ids (ascending) of the rows the walk matches in the table as it is now."""
        if query.matches_every_row:
            return table.ids  # read under the lock, not kept
        key = (walk, table.version)
        ids = self.matches.get(key)
        if ids is None:
            ids = [row.id for row in matching_rows(listing, table, query)]
            self.matches.put(key, ids)
        return ids

    def _total(self, listing: str, table: Table, query: ListQuery, walk: tuple[Any, ...]) -> int:
        """Computed on page 1; later pages reuse the walk's count while it is cached."""
        total = self.totals.get(walk) if query.page > 1 else None
        if total is None:
            total = len(self._matching(listing, table, query, walk))
            self.totals.put(walk, total)
        return total


def link_header(base: str, params: dict[str, str], page: int, per_page: int, total: int) -> str:
    """RFC 5988 links as the service builds them (per_page omitted when it is the default)."""
    query = {name: value for name, value in params.items() if name != "per_page"}
    if per_page != DEFAULT_PER_PAGE:
        query["per_page"] = str(per_page)
    page_count = max(1, math.ceil(total / per_page))
    pages = {"self": page, "first": 1}
    if page > 1:
        pages["previous"] = page - 1
    if page < page_count:
        pages["next"] = page + 1
    pages["last"] = page_count
    links = []
    for rel, number in pages.items():
        # Assigning keeps `page` where the client put it, or appends it, like array_replace.
        link_query = {**query, "page": str(number)}
        links.append(f'<{base}?{urlencode(link_query)}>; rel="{rel}"')
    return ", ".join(links)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


class Stats:
    """Counters of API requests (control requests are not counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_status: Counter[str] = Counter()
            self.faults_injected = 0
            self.dropped = 0
            self.max_in_flight_seen = 0

    def request(self) -> None:
        with self._lock:
            self.requests += 1

    def answered(self, response: Response, fault: bool) -> None:
        with self._lock:
            if response is DROP:
                self.dropped += 1
            else:
                self.by_status[str(response.status)] += 1
            self.faults_injected += int(fault)

    def in_flight(self, value: int) -> None:
        with self._lock:
            self.max_in_flight_seen = max(self.max_in_flight_seen, value)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "by_status": dict(sorted(self.by_status.items())),
                "faults_injected": self.faults_injected,
                "max_in_flight_seen": self.max_in_flight_seen,
                "dropped": self.dropped,
            }


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, asks the EmulatorServer for the answer, writes it in one send."""

    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries a Content-Length
    server_version = "InvoicedEmulator/1.0"
    disable_nagle_algorithm = True  # small answers must not wait for delayed ACKs
    timeout = 300  # idle keep-alive connections release their thread eventually

    @property
    def emulator(self) -> EmulatorServer:
        return cast(_HttpServer, self.server).emulator

    def setup(self) -> None:
        super().setup()
        self.emulator._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.emulator._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: a benchmark makes thousands of requests."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        length = php_int(self.headers.get("Content-Length"))
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        body = self._read_body()
        if urlsplit(self.path).path.startswith("/_emulator/"):
            response = self.emulator.handle_control(self.command, self.path, body)
        else:
            # Header names are case-insensitive: index them lower-cased.
            headers = {name.lower(): value for name, value in self.headers.items()}
            response = self.emulator.handle_api(self.command, self.path, headers)
        if response is DROP:
            self.close_connection = True  # the socket closes with nothing written
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        lines = [
            f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
            f"Server: {self.server_version}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.wfile.write(head + response.body)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for idle keep-alive connections
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, closed keep-alive) is routine, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def require_loopback(host: str) -> str:
    """The IPv4 loopback address to bind for `host`; anything reachable from outside is refused."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        raise ValueError(f"refusing to bind {host!r}: the emulator only listens on 127.0.0.1")
    return host


def api_key_of(authorization: str | None) -> str | None:
    """The key from `Basic base64(key:)` (or a Bearer token), else None."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class EmulatorServer:
    """An Invoiced API emulator on 127.0.0.1, served from a background daemon thread.

    The dataset is generated at construction, so truth()/records()/mutate() work before start().
    """

    def __init__(
        self,
        scale: float = 1.0,
        seed: int = 1,
        api_key: str = "emulator-key",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultConfig | None = None,
    ) -> None:
        self.host = require_loopback(host)
        self.port = port
        self.api_key = api_key
        self.dataset = Dataset(scale=scale, seed=seed)
        self._pager = Pager()
        self._stats = Stats()
        self._faults = faults or FaultConfig()
        self._fault_rng = random.Random(self._faults.fault_seed)
        self._lock = threading.Lock()  # faults, fault dice, in-flight counts, connections
        self._in_flight: Counter[str] = Counter()
        self._connections: set[socket.socket] = set()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        if self._httpd is not None:
            return self
        self._httpd = _HttpServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"invoiced-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the emulator is not started")
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # end keep-alive connections still being served
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    # -- ground truth, mutations, faults, stats ---------------------------------------------

    def truth(self) -> dict[str, int]:
        return self.dataset.truth()

    def records(self, listing: str) -> list[dict[str, Any]]:
        return self.dataset.records(listing)

    def mutate(
        self, listing: str, *, insert: int = 0, update: int = 0, delete: int = 0
    ) -> dict[str, Any]:
        """See Dataset.mutate: inserted, updated and deleted ids, and for customers and
        invoices the ids of the rows their deletions took with them ("cascaded")."""
        return self.dataset.mutate(listing, insert=insert, update=update, delete=delete)

    def timestamp_after(self, moment: int) -> None:
        """Later mutations are timestamped after `moment`: a test's moments stay apart."""
        self.dataset.timestamp_after(moment)

    @property
    def faults(self) -> FaultConfig:
        return self._faults

    def set_faults(self, faults: FaultConfig) -> None:
        with self._lock:
            self._faults = faults
            self._fault_rng = random.Random(faults.fault_seed)

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    # -- API requests ----------------------------------------------------------------------

    def handle_api(self, method: str, target: str, headers: dict[str, str]) -> Response:
        """Authenticate, cap concurrency, wait, maybe inject a fault, then answer.

        `headers` maps lower-cased header names to values.
        """
        self._stats.request()
        faults = self._faults
        key = api_key_of(headers.get("authorization"))
        if key != self.api_key:
            self._sleep(faults)
            response = ApiError(401, "Invalid API key. Check the key you authenticate with.")
            return self._answered(response.response())
        with self._admitted(key, faults) as admitted:
            if not admitted:
                message = (
                    "Too many concurrent requests! You can only make "
                    f"{faults.max_in_flight} concurrent requests at a time."
                )
                return self._answered(ApiError(429, message, "rate_limit_error").response())
            self._sleep(faults)
            kind = self._pick_fault(faults)
            if kind is not None and kind != "truncated_json":
                return self._answered(fault_response(kind, faults), fault=True)
            response = self._route(method, target, headers, key)
            if kind == "truncated_json":
                return self._answered(truncate(response), fault=True)
            return self._answered(response)

    def _answered(self, response: Response, fault: bool = False) -> Response:
        self._stats.answered(response, fault)
        return response

    @staticmethod
    def _sleep(faults: FaultConfig) -> None:
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000)

    def _pick_fault(self, faults: FaultConfig) -> str | None:
        if faults.fault_rate <= 0:
            return None
        with self._lock:
            if self._fault_rng.random() >= faults.fault_rate:
                return None
            return self._fault_rng.choice(faults.fault_kinds)

    @contextmanager
    def _admitted(self, key: str, faults: FaultConfig) -> Iterator[bool]:
        """Count the request in flight for its key while it runs; False when over the cap."""
        with self._lock:
            self._in_flight[key] += 1
            current = self._in_flight[key]
            admitted = faults.max_in_flight <= 0 or current <= faults.max_in_flight
            if not admitted:  # a refused request does not hold a slot
                self._in_flight[key] -= 1
        self._stats.in_flight(current)
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._in_flight[key] -= 1

    def _route(self, method: str, target: str, headers: dict[str, str], key: str) -> Response:
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        segments = path.strip("/").split("/")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            if method == "GET" and segments[0] in TOP_LEVEL_LISTINGS and len(segments) <= 2:
                if len(segments) == 1:
                    return self._list(segments[0], path, params, headers, key)
                return self._retrieve(segments[0], segments[1], params)
            if (
                method == "GET"
                and len(segments) in (3, 4)
                and segments[2] in CHILDREN.get(segments[0], ())
            ):
                parent = (PARENTS[segments[0]], segments[1])
                if len(segments) == 3:
                    return self._list(segments[2], path, params, headers, key, parent)
                if segments[0] == "customers" and segments[2] in CUSTOMER_LISTINGS:
                    return self._retrieve(segments[2], segments[3], params, parent)
            raise ApiError(404, f"Request was not recognized: {method} {path}")
        except ApiError as error:
            return error.response()

    def _require_customer(self, raw_id: str) -> None:
        """The 404 the service answers for a customer that does not exist (call with the
        dataset lock held, so that the customer cannot vanish before its rows are chosen)."""
        rid = parent_id(raw_id)
        if rid is None or rid not in self.dataset.table("customers").rows:
            raise ApiError(404, f"{HUMAN_NAMES['customers']} was not found: {unquote(raw_id)}")

    def _children(self, listing: str, parent: tuple[str, str]) -> Table:
        """The rows of `listing` under a parent (call with the dataset lock held).

        Only payment sources look their customer up; the other routes answer what they find,
        nothing for a parent that does not exist.
        """
        attribute, raw_id = parent
        if listing == "payment_sources":
            self._require_customer(raw_id)
        return self.dataset.children(listing, attribute, parent_id(raw_id))

    def _list(
        self,
        listing: str,
        path: str,
        params: dict[str, str],
        headers: dict[str, str],
        key: str,
        parent: tuple[str, str] | None = None,
    ) -> Response:
        """A page of a listing, or with `parent` ("customer" or "invoice", and its id as in the
        path) of the rows under that parent."""
        own_notes = listing == "notes" and parent is not None and parent[0] == "customer"
        # A customer's notes are newest first whatever `sort` says (an invalid one included).
        query_params = {k: v for k, v in params.items() if k != "sort"} if own_notes else params
        query = parse_list_query(listing, query_params)
        if own_notes:
            query.sort = [("id", True)]
            query.predicates.append(lambda v: v.row.invoice is None)  # not its invoices' notes
        # A walk is one key's sequence of pages of one path with the same other parameters,
        # compared as the service compares them: in any order, per_page by its clamped value
        # (the Link URLs omit per_page=100 that a first request may have spelled out).
        others = sorted((k, v) for k, v in params.items() if k not in ("page", "per_page"))
        walk = (key, path, query.per_page, tuple(others))
        with self.dataset.lock:
            table = (
                self.dataset.table(listing) if parent is None else self._children(listing, parent)
            )
            if listing == "payment_sources":  # every page holds every source
                rows, total = self._pager.every(listing, table, query, walk)
            else:
                rows, total = self._pager.page(listing, table, query, walk)
        full = listing == "payments" and query.include_applied_to
        body = b"[" + b",".join(row.blob if full else row.listing_blob for row in rows) + b"]"
        host = headers.get("host") or f"{self.host}:{self.port}"
        link = link_header(f"http://{host}{path}", params, query.page, query.per_page, total)
        return Response(200, body, headers=[("X-Total-Count", str(total)), ("Link", link)])

    def _retrieve(
        self,
        listing: str,
        raw_id: str,
        params: dict[str, str],
        parent: tuple[str, str] | None = None,
    ) -> Response:
        """One record by id (a string id for the catalog's listings; with `parent`, only a
        contact or payment source of that customer, the payment source's customer looked up
        first)."""
        rid: Any = unquote(raw_id) if listing in CATALOG_LISTINGS else None
        if rid is None and raw_id.isdigit():
            rid = int(raw_id)
        with self.dataset.lock:
            if parent is not None and listing == "payment_sources":
                self._require_customer(parent[1])
            row = self.dataset.table(listing).rows.get(rid) if rid is not None else None
        if row is not None and parent is not None and row.customer != parent_id(parent[1]):
            row = None
        if row is None:
            raise ApiError(404, f"{HUMAN_NAMES[listing]} was not found: {unquote(raw_id)}")
        full = listing != "payments" or "applied_to" in params.get("include", "").split(",")
        return Response(200, row.blob if full else row.listing_blob)

    # -- control requests ------------------------------------------------------------------

    def handle_control(self, method: str, target: str, body: bytes) -> Response:
        """The /_emulator/* API: ground truth and knobs for other processes."""
        path = urlsplit(target).path.rstrip("/")
        try:
            payload = json.loads(body) if body.strip() else {}
            return self._control(method, path, payload)
        except (ValueError, TypeError, KeyError) as error:
            return json_response({"type": "invalid_request", "message": str(error)}, 400)

    def _control(self, method: str, path: str, payload: dict[str, Any]) -> Response:
        if method == "GET" and path == "/_emulator/truth":
            return json_response(self.truth())
        if method == "GET" and path.startswith("/_emulator/records/"):
            listing = path.removeprefix("/_emulator/records/")
            if listing not in LISTINGS:
                return json_response({"message": f"unknown listing {listing!r}"}, 404)
            return Response(200, self.dataset.records_bytes(listing))
        if method == "POST" and path == "/_emulator/mutate":
            counts = {k: int(payload.get(k, 0)) for k in ("insert", "update", "delete")}
            return json_response(self.mutate(str(payload["listing"]), **counts))
        if method == "POST" and path == "/_emulator/faults":
            self.set_faults(FaultConfig.from_json(payload))
            return json_response(self.faults.to_json())
        if method == "GET" and path == "/_emulator/faults":
            return json_response(self.faults.to_json())
        if method == "GET" and path == "/_emulator/stats":
            return json_response(self.stats())
        if method == "POST" and path == "/_emulator/reset-stats":
            self.reset_stats()
            return json_response(self.stats())
        return json_response({"message": f"unknown control request {method} {path}"}, 404)
