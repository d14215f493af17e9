"""One listing walked page by page, strictly in order, following `Link` headers.

`Listing` is an iterator of pages (lists of records) with `ListingStats` filled in as it goes;
`LinkHeaderPaginator` is its pagination strategy.
"""

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests

from invoiced_assets.api.errors import InvoicedAPIError
from invoiced_assets.api.in_flight import Rank

if TYPE_CHECKING:
    from invoiced_assets.api.client import Fetched, InvoicedClient


class LinkHeaderPaginator:
    """Follow the `next` URL of the RFC 5988 `Link` header; stop on no `next` or an empty page.

    The service's `X-Total-Count` is computed on page 1 and cached, so its `next` link can stop a
    page early or run one late when rows change during a walk; an empty page also ends it.
    """

    def next_url(self, response: requests.Response, page: list[Any]) -> str | None:
        if not page:
            return None
        return response.links.get("next", {}).get("url")


@dataclass
class ListingStats:
    """What one walk of a listing did, for logs and materialization metadata."""

    listing: str
    pages: int = 0
    records: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 answers seen, retried or not
    bytes_received: int = 0
    total_count: int | None = None  # X-Total-Count on page 1
    total_count_after: int | None = None  # X-Total-Count asked again after the last page
    elapsed_seconds: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        return {
            "api_pages": self.pages,
            "api_records": self.records,
            "api_requests": self.requests,
            "api_retries": self.retries,
            "api_429s": self.rate_limited,
            "api_bytes_received": self.bytes_received,
            "api_total_count": self.total_count,
            "api_records_per_second": round(self.records / self.elapsed_seconds)
            if self.elapsed_seconds
            else None,
            "api_seconds": round(self.elapsed_seconds, 3),
        }


class Listing:
    """Every page of one listing, fetched strictly in order by following `next` links.

    Iterate for pages (lists of records); `stats` is filled in as the walk goes. `rank`: which
    waiting request a freed in-flight slot goes to first (`api.in_flight.Rank`).
    """

    def __init__(
        self,
        client: "InvoicedClient",
        endpoint: str,
        params: Mapping[str, Any],
        *,
        sliced: bool = True,
        rank: Rank = Rank.WALK,
    ) -> None:
        self._client = client
        self.endpoint = endpoint
        self.params = dict(params)
        self.sliced = sliced
        self.rank = rank
        self.stats = ListingStats(listing=endpoint)

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        started = time.monotonic()
        url: str | None = self.endpoint
        params: Mapping[str, Any] | None = self.params
        try:
            while url:
                fetched = self._client.get(url, params, rank=self.rank)
                page = fetched.body
                if not isinstance(page, list):
                    raise InvoicedAPIError(
                        f"GET {self.endpoint} answered a {type(page).__name__}, not a list of"
                        " records; is INVOICED_BASE_URL the Invoiced API?",
                        path=self.endpoint,
                    )
                self._count(fetched, page)
                if self.stats.pages == 1:
                    total = fetched.response.headers.get("X-Total-Count", "")
                    self.stats.total_count = int(total) if total.isdigit() else None
                url = self._client.paginator.next_url(fetched.response, page)
                if not self.sliced:
                    url = None  # later pages would only repeat this one
                params = None  # the next link carries every parameter
                if page:
                    yield page
        finally:
            self.stats.elapsed_seconds = time.monotonic() - started

    def _count(self, fetched: "Fetched", page: list[Any]) -> None:
        stats = self.stats
        stats.pages += 1
        stats.records += len(page)
        stats.requests += fetched.attempts
        stats.retries += fetched.attempts - 1
        stats.rate_limited += fetched.rate_limited
        stats.bytes_received += len(fetched.response.content)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, page after page."""
        for page in self:
            yield from page

    def count_now(self) -> int | None:
        """The listing's X-Total-Count as of now (one request for one record)."""
        fetched = self._client.get(self.endpoint, {**self.params, "per_page": 1})
        self.stats.requests += fetched.attempts
        self.stats.retries += fetched.attempts - 1
        self.stats.rate_limited += fetched.rate_limited
        total = fetched.response.headers.get("X-Total-Count", "")
        self.stats.total_count_after = int(total) if total.isdigit() else None
        return self.stats.total_count_after
