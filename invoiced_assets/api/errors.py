"""Typed errors raised when talking to the Invoiced API, and the answer each one comes from.

Modelled on stripe-python: one base class, one subclass per way a request can fail, so callers
(and tests) can tell "fix your key" from "the service is down" without parsing messages.
Messages name the HTTP method, the URL path and how often the request was tried; they never
contain the API key (it only ever travels in the Authorization header).
"""

import requests
from urllib3.exceptions import ReadTimeoutError


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


# --------------------------------------------------------------------------------------------
# From a failed answer to its error
# --------------------------------------------------------------------------------------------

# The service's 404 for a per-customer listing whose customer does not exist (its other 404s,
# such as "Request was not recognized", mean the request itself is wrong).
CUSTOMER_NOT_FOUND = "Customer was not found"

API_KEY_HELP = (
    "Check INVOICED_API_KEY, and that INVOICED_ENVIRONMENT matches the key (sandbox keys only work"
    " with environment 'sandbox'). An account administrator can create a key in Invoiced under"
    " Settings → Developers → API Keys."
)


def describe_connection_error(exc: Exception) -> str:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.Timeout) or isinstance(reason, TimeoutError | ReadTimeoutError):
        return "the request timed out"
    return f"could not connect or the connection dropped ({type(reason or exc).__name__})"


def _api_message(response: requests.Response) -> tuple[str | None, str | None]:
    """The API's own `message` and `param`, when the body is the usual JSON error object."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    return body.get("message"), body.get("param")


def error_for(response: requests.Response, path: str, attempts: int) -> InvoicedError:
    status = response.status_code
    api_message, param = _api_message(response)
    said = f": {api_message}" if api_message else ""
    common = {
        "path": path,
        "status": status,
        "attempts": attempts,
        "api_message": api_message,
        "param": param,
    }
    if status == 401:
        return InvoicedAuthenticationError(
            f"Invoiced rejected the API key (HTTP 401 on GET {path}{said}). {API_KEY_HELP}",
            **common,
        )
    if status == 403:
        return InvoicedPermissionError(
            f"The API key may not read {path} (HTTP 403{said}). Use a key of a user with access"
            " to this data.",
            **common,
        )
    if status == 404:
        if (api_message or "").startswith(CUSTOMER_NOT_FOUND):
            return InvoicedCustomerNotFoundError(f"GET {path}: HTTP 404{said}.", **common)
        return InvoicedNotFoundError(
            f"GET {path} was not found (HTTP 404{said}). If the record should exist, or the"
            " service does not know the path (`Request was not recognized`), check"
            " INVOICED_BASE_URL (the API's host, e.g. https://api.invoiced.com, with no path)"
            " and INVOICED_ENVIRONMENT.",
            **common,
        )
    if status == 429:
        return InvoicedRateLimitError(
            f"GET {path} was still rate limited (HTTP 429{said}) after {attempts} attempts."
            " Lower max_in_flight, or run when fewer other integrations use this key.",
            **common,
        )
    if status >= 500:
        kind = "" if api_message else " (a non-JSON error page)"
        return InvoicedAPIError(
            f"GET {path} failed with HTTP {status}{kind}{said} after {attempts} attempts. The"
            " service may be degraded; try again later.",
            **common,
        )
    param_hint = f" (parameter {param!r})" if param else ""
    return InvoicedInvalidRequestError(
        f"Invoiced refused GET {path}{param_hint} with HTTP {status}{said}.", **common
    )


def failure_error(
    path: str, failure: str, attempts: int, response: requests.Response | None = None
) -> InvoicedError:
    """The error once every attempt failed without an answer to map (`error_for`): a body that
    was not valid JSON (`response` given), or a connection that failed."""
    if response is not None:
        return InvoicedAPIError(
            f"GET {path} answered HTTP {response.status_code} with a body that is not valid"
            f" JSON, after {attempts} attempts. The service may be degraded; try again later.",
            path=path,
            status=response.status_code,
            attempts=attempts,
        )
    return InvoicedConnectionError(
        f"GET {path} failed after {attempts} attempts: {failure}. Check the network and"
        " INVOICED_BASE_URL / INVOICED_ENVIRONMENT.",
        path=path,
        attempts=attempts,
    )
