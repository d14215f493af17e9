"""The one retry policy: what is retried and how long to wait, as data.

`InvoicedClient.get` drives it (nothing retries inside the connection pool): urllib3's `Retry`
decides which failures are retried (dropped connections, broken or unreadable bodies, 429 and
5xx) and how long the next wait is (exponential backoff with jitter, or the answer's
`Retry-After`, clamped). Tests give tiny waits.
"""

from dataclasses import dataclass
from typing import Any

from urllib3.util.retry import Retry

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: data, so tests can make every wait tiny."""

    max_retries: int = 6
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    # Sleep at most this long for one Retry-After; a longer one is clamped.
    retry_after_max_seconds: float = 120.0

    def urllib3_retry(self) -> Retry:
        """The policy as urllib3's `Retry`, which `InvoicedClient.get` drives: what is retried
        (connection failures, broken or unreadable bodies, 429 and 5xx), and how long to wait
        (its backoff, or the answer's `Retry-After`)."""
        return _ClampedRetry(
            total=self.max_retries,
            connect=self.max_retries,
            read=self.max_retries,
            status=self.max_retries,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRYABLE_STATUSES,
            backoff_factor=self.backoff_initial_seconds,
            backoff_max=self.backoff_max_seconds,
            backoff_jitter=self.backoff_initial_seconds,
            respect_retry_after_header=True,
            raise_on_status=False,
            retry_after_max_seconds=self.retry_after_max_seconds,
        )


class _ClampedRetry(Retry):
    """urllib3's Retry, with a bound on how long one `Retry-After` may make us sleep."""

    def __init__(self, *args: Any, retry_after_max_seconds: float = 120.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_max_seconds = retry_after_max_seconds

    def new(self, **kw: Any) -> "_ClampedRetry":
        new_retry = super().new(**kw)
        new_retry.retry_after_max_seconds = self.retry_after_max_seconds
        return new_retry

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            seconds = float(retry_after)  # the base class accepts only whole seconds or a date
        except ValueError:
            seconds = super().parse_retry_after(retry_after)
        return max(0.0, min(seconds, self.retry_after_max_seconds))
