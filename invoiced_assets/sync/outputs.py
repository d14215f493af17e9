"""What a sync step tells Dagster: each table's output metadata, and why a run failed."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd

from invoiced_assets.api.errors import (
    InvoicedAPIError,
    InvoicedAuthenticationError,
    InvoicedConnectionError,
    InvoicedRateLimitError,
)
from invoiced_assets.extract.incremental import SyncState
from invoiced_assets.extract.listings import Extraction
from invoiced_assets.tables.shaping import ShapedTable

PREVIEW_ROWS = 5
TRANSIENT_ERRORS = (InvoicedAPIError, InvoicedConnectionError, InvoicedRateLimitError, OSError)
KEEP_LAST_GOOD = "Tables not written by this run keep their last good copy."


def markdown_preview(shaped: ShapedTable, rows: int = PREVIEW_ROWS, width: int = 40) -> str:
    """The first rows as a Markdown table, each cell cut to `width` characters."""

    def cell(value: Any) -> str:
        text = "" if value is None or value is pd.NA else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"

    head = shaped.data.head(rows)
    names = list(head.columns)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for record in head.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in record) + " |")
    return "\n".join(lines)


def failure_for(failures: list[Extraction]) -> dg.Failure:
    """One clear error for the run: the rejected key once, or each failed object."""
    auth = next(
        (f.error for f in failures if isinstance(f.error, InvoicedAuthenticationError)), None
    )
    if auth is not None:
        return dg.Failure(description=f"{auth} {KEEP_LAST_GOOD}", allow_retries=False)
    lines = [f"- {f.obj.name}: {f.error}" for f in failures]
    return dg.Failure(
        description=(
            f"{len(failures)} Invoiced object(s) could not be read; their tables keep their last"
            " good copy, and the other objects were written:\n" + "\n".join(lines)
        ),
        # Retrying the step helps only when something was transient (outage, rate limit).
        allow_retries=any(isinstance(f.error, TRANSIENT_ERRORS) for f in failures),
    )


@dataclass(frozen=True)
class BlockedObject:
    """An object not published because a blocking check failed on one of its tables."""

    name: str
    failed: Sequence[tuple[str, str, str]]  # (table, check, what it found)


def blocked_message(blocked: Sequence[BlockedObject], staging: str) -> str:
    """Which checks stopped which objects, with the figures, and how to accept a real drop."""
    lines = [
        f"- {obj.name} (not published): {table}: {check} failed: {found}"
        for obj in blocked
        for table, check, found in obj.failed
    ]
    return (
        f"{len(blocked)} Invoiced object(s) failed a blocking check and were not published; all"
        " their tables keep their last good copy and their cursors stay where they were, while"
        " every other object was published:\n"
        + "\n".join(lines)
        + f"\nWhat was read is kept in {staging} for inspection until the next run. If a drop"
        " is real (a mass deletion in Invoiced), accept it for one run with the run config"
        ' {"ops": {"invoiced_tables": {"config": {"accept_row_drop": ["<object or table>"]}}}}'
        " (the launchpad, or `dg launch --config-json`), or lower INVOICED_MIN_ROW_RATIO for"
        " good. Duplicate or missing keys and unresolved parents are never accepted: they mean"
        " the read was wrong."
    )


def failure(
    failures: list[Extraction], blocked: Sequence[BlockedObject], staging: str
) -> dg.Failure | None:
    """The run's failure (None when every object was read and published)."""
    if not blocked:
        return failure_for(failures) if failures else None
    description = blocked_message(blocked, staging)
    if failures:
        description = f"{failure_for(failures).description}\n\n{description}"
    # A retry would read the same data and fail the same check.
    return dg.Failure(description=description, allow_retries=False)


def output_metadata(
    read: Any, name: str, state: SyncState, event_cursor: int, now: float
) -> dict[str, Any]:
    """A table output's metadata: the read's cost, the cursors for the next run, a preview."""
    extraction = read.extraction
    next_state = state.next_metadata(
        full=not extraction.plan.incremental,
        newest_updated_at=extraction.max_updated_at,
        # An append-only table continues after the newest event it holds.
        event_id=max(extraction.max_id or 0, state.cursor_event_id or 0)
        if extraction.obj.append_only
        else event_cursor,
        now=now,
    )
    return {
        "invoiced_object": extraction.obj.name,
        **extraction.stats.as_metadata(),
        **{k: v for k, v in next_state.items() if v is not None},
        "preview": dg.MetadataValue.md(read.previews[name]),
    }
