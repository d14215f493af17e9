"""Reading the Invoiced REST API: the client, its Dagster resource, its errors and retry policy."""

from invoiced_assets.api.client import ClientSettings, ConnectionCheck, InvoicedClient
from invoiced_assets.api.listing import Listing, ListingStats
from invoiced_assets.api.resource import InvoicedResource
from invoiced_assets.api.retry import RetryPolicy

__all__ = [
    "ClientSettings",
    "ConnectionCheck",
    "InvoicedClient",
    "InvoicedResource",
    "Listing",
    "ListingStats",
    "RetryPolicy",
]
