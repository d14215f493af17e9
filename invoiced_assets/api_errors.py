"""Typed errors raised when talking to the Invoiced API.

Modelled on stripe-python: one base class, one subclass per way a request can fail, so callers
(and tests) can tell "fix your key" from "the service is down" without parsing messages.
Messages name the HTTP method, the URL path and how often the request was tried; they never
contain the API key (it only ever travels in the Authorization header).
"""


class InvoicedError(Exception):
    """Base class of every error this package raises about the Invoiced API."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        status: int | None = None,
        attempts: int = 1,
        api_message: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.status = status
        self.attempts = attempts
        self.api_message = api_message
        self.param = param


class InvoicedConfigurationError(InvoicedError, ValueError):
    """The resource's settings are wrong (bad URL, environment, page size...)."""


class InvoicedInvalidRequestError(InvoicedError):
    """HTTP 400: the API refused the request's parameters. Not retried."""


class InvoicedAuthenticationError(InvoicedError):
    """HTTP 401: the API key was rejected. Not retried."""


class InvoicedPermissionError(InvoicedError):
    """HTTP 403: the key is valid but may not do this. Not retried."""


class InvoicedNotFoundError(InvoicedError):
    """HTTP 404: no such endpoint or record. Not retried."""


class InvoicedCustomerNotFoundError(InvoicedNotFoundError):
    """HTTP 404 `Customer was not found: <id>`: the customer a per-customer listing names does
    not exist (any more). The only 404 a sync may read as "this customer is gone"."""


class InvoicedRateLimitError(InvoicedError):
    """HTTP 429 still answered after every retry."""


class InvoicedAPIError(InvoicedError):
    """HTTP 5xx, or an unreadable body, still answered after every retry."""


class InvoicedConnectionError(InvoicedError):
    """The connection failed, dropped or timed out on every try."""
