"""The Invoiced API as a Dagster resource: the configuration users see (in code, the UI and
Dagster+). It hands out an `InvoicedClient` built once from it."""

import threading
from typing import Any, ClassVar, Literal

import dagster as dg
from pydantic import Field, PrivateAttr, field_validator

from invoiced_assets.api.client import (
    DEFAULT_MAX_IN_FLIGHT,
    ENVIRONMENT_URLS,
    SERVICE_MAX_IN_FLIGHT,
    ClientSettings,
    ConnectionCheck,
    InvoicedClient,
    validate_base_url,
)
from invoiced_assets.api.errors import API_KEY_HELP, InvoicedConfigurationError
from invoiced_assets.api.retry import RetryPolicy


class InvoicedResource(dg.ConfigurableResource):
    """Read access to one Invoiced account, shared by every Invoiced asset.

    Set the key with `INVOICED_API_KEY`; it never appears in logs, errors or the UI.
    """

    api_key: str = Field(
        repr=False,
        description="Invoiced API key (Settings → Developers → API Keys). Secret: use an EnvVar.",
    )
    environment: Literal["production", "sandbox"] = Field(
        default="production",
        description="Which Invoiced: production (api.invoiced.com) or sandbox.",
    )
    base_url: str | None = Field(
        default=None,
        description=(
            "Overrides the environment's URL (the bundled emulator, a proxy). https only, except"
            " for loopback hosts."
        ),
    )
    page_size: int = Field(default=100, ge=1, le=100, description="Records per page (1-100).")
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    read_timeout_seconds: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=20, description="Retries per request.")
    backoff_initial_seconds: float = Field(default=0.5, ge=0)
    backoff_max_seconds: float = Field(default=30.0, ge=0)
    retry_after_max_seconds: float = Field(
        default=120.0, ge=0, description="The longest a Retry-After header may make a request wait."
    )
    max_in_flight: int = Field(
        default=DEFAULT_MAX_IN_FLIGHT,
        ge=1,
        le=SERVICE_MAX_IN_FLIGHT,
        description=(
            "Most requests in flight at once, shared by everything in the process. The service"
            " allows 20 per key, shared with your other integrations: the limit halves while"
            " the service answers 429, and grows back after."
        ),
    )

    _client: InvoicedClient | None = PrivateAttr(default=None)
    _client_lock: ClassVar[threading.Lock] = threading.Lock()

    @field_validator("base_url", mode="before")
    @classmethod
    def _check_base_url(cls, value: Any) -> Any:
        # EnvVar values are checked once Dagster has resolved them (this runs again then).
        if value is None or isinstance(value, dg.EnvVar) or value == "":
            return value or None
        return validate_base_url(value)

    def settings(self) -> ClientSettings:
        if not self.api_key or not self.api_key.strip():
            raise InvoicedConfigurationError(
                f"The Invoiced API key is empty. Set INVOICED_API_KEY. {API_KEY_HELP}"
            )
        return ClientSettings(
            api_key=self.api_key.strip(),
            base_url=self.base_url or ENVIRONMENT_URLS[self.environment],
            page_size=self.page_size,
            connect_timeout_seconds=self.connect_timeout_seconds,
            read_timeout_seconds=self.read_timeout_seconds,
            max_in_flight=self.max_in_flight,
            retry=RetryPolicy(
                max_retries=self.max_retries,
                backoff_initial_seconds=self.backoff_initial_seconds,
                backoff_max_seconds=self.backoff_max_seconds,
                retry_after_max_seconds=self.retry_after_max_seconds,
            ),
        )

    def get_client(self) -> InvoicedClient:
        """The client for these settings, built once."""
        with self._client_lock:
            if self._client is None:
                self._client = InvoicedClient(self.settings())
            return self._client

    def check_connection(self) -> ConnectionCheck:
        """Test & continue: one authenticated call that passes or says what to fix."""
        return self.get_client().check_connection()
