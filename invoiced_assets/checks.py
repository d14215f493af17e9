"""Data-quality checks of every table, declared from the catalogue, evaluated as pure functions.

The checks are SQL that the destination runs (`destinations.audit`): a full load audits the staged
table, an incremental run the result of its merge, before either is published; executed on
their own, they audit the published tables. These functions decide from the figures:

| check                          | tables                      | severity | fails when                        |
|--------------------------------|-----------------------------|----------|-----------------------------------|
| `primary_key_unique_not_null`  | all                         | error    | a key is null or repeated         |
| `row_count_matches_api`        | objects                     | error    | rows differ from `X-Total-Count`  |
| `parent_references_resolve`    | child tables                | error    | a row's parent is not in the load |
| `customer_references_resolve`  | objects naming a customer   | warning  | a customer id is unknown          |
| `no_row_count_collapse`        | all                         | error    | rows fell below a share of the    |
|                                |                             |          | previous load (e.g. 0 after 5,000)|
| `history_versions_consistent`  | versioned objects           | error    | a `<table>_history` of the object |
|                                | (INVOICED_HISTORY)          |          | disagrees with its table, or its  |
|                                |                             |          | versions overlap                  |

Error checks are blocking: an object whose tables fail one is not published (every table keeps
its last good copy) and the run fails; a warning never blocks.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

PRIMARY_KEY = "primary_key_unique_not_null"
ROW_COUNT = "row_count_matches_api"
PARENT_REFERENCES = "parent_references_resolve"
CUSTOMER_REFERENCES = "customer_references_resolve"
COLLAPSE = "no_row_count_collapse"
DEFAULT_MIN_ROW_RATIO = 0.5


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)


def primary_key_outcome(
    key: Sequence[str],
    *,
    rows: int,
    null_keys: int,
    duplicated_rows: int,
    examples: Sequence[Mapping[str, Any]],
) -> CheckOutcome:
    """Every row has a key, and no key is repeated (figures computed by the warehouse)."""
    return CheckOutcome(
        null_keys == 0 and duplicated_rows == 0,
        {
            "key": ", ".join(key),
            "rows": rows,
            "null_keys": null_keys,
            "duplicated_rows": duplicated_rows,
            "duplicate_examples": str([dict(e) for e in examples]) if examples else "none",
        },
    )


def check_row_count(rows: int, total_before: int | None, total_after: int | None) -> CheckOutcome:
    """Rows equal the listing's X-Total-Count, within what changed while it was read.

    The count is taken on page 1 and again after the last page: records created or deleted in
    between can move the right answer anywhere between the two.
    """
    totals = [t for t in (total_before, total_after) if t is not None]
    metadata: dict[str, Any] = {
        "rows": rows,
        "api_total_count_at_start": total_before,
        "api_total_count_at_end": total_after,
        "allowance": "records created or deleted during the walk: any count between the"
        " X-Total-Count at its start and at its end passes",
    }
    if not totals:
        return CheckOutcome(False, {**metadata, "reason": "the API sent no X-Total-Count"})
    return CheckOutcome(min(totals) <= rows <= max(totals), metadata)


def references_outcome(
    *,
    references: int,
    null_references: int,
    unresolved: int,
    examples: Sequence[Any],
    target: str,
    nullable: bool = True,
) -> CheckOutcome:
    """Every (non-null, when `nullable`) reference resolves (figures computed by the warehouse)."""
    return CheckOutcome(
        unresolved == 0 and (nullable or null_references == 0),
        {
            "references": references,
            "null_references": null_references,
            "unresolved": unresolved,
            "unresolved_examples": ", ".join(map(str, examples)) or "none",
            "target": target,
        },
    )


def check_collapse(rows: int, previous_rows: int | None, min_ratio: float) -> CheckOutcome:
    """Rows did not fall below `min_ratio` of the previous load's (zero after any is a fall)."""
    metadata: dict[str, Any] = {
        "rows": rows,
        "previous_rows": previous_rows,
        "min_ratio": min_ratio,
    }
    if not previous_rows:
        return CheckOutcome(True, {**metadata, "note": "no earlier load to compare with"})
    return CheckOutcome(rows >= previous_rows * min_ratio and rows > 0, metadata)


# --------------------------------------------------------------------------------------------
# Check specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckDeclaration:
    name: str
    severity: dg.AssetCheckSeverity
    description: str

    @property
    def blocking(self) -> bool:
        return self.severity == dg.AssetCheckSeverity.ERROR


DECLARATIONS = {
    PRIMARY_KEY: CheckDeclaration(
        PRIMARY_KEY,
        dg.AssetCheckSeverity.ERROR,
        "The table's key is never null and never repeated.",
    ),
    ROW_COUNT: CheckDeclaration(
        ROW_COUNT,
        dg.AssetCheckSeverity.ERROR,
        "The rows written equal the X-Total-Count the Invoiced API reported for the listing"
        " (any count between its value at the start and at the end of the read passes).",
    ),
    PARENT_REFERENCES: CheckDeclaration(
        PARENT_REFERENCES,
        dg.AssetCheckSeverity.ERROR,
        "Every row points at a parent row loaded in the same read.",
    ),
    CUSTOMER_REFERENCES: CheckDeclaration(
        CUSTOMER_REFERENCES,
        dg.AssetCheckSeverity.WARN,
        "Every customer id (where there is one) is a customer loaded in the same run.",
    ),
    COLLAPSE: CheckDeclaration(
        COLLAPSE,
        dg.AssetCheckSeverity.ERROR,
        "The load did not shrink below INVOICED_MIN_ROW_RATIO of the previous load's rows"
        " (a sync that suddenly returns nothing fails here instead of passing silently).",
    ),
}


# A versioned object's history check (INVOICED_HISTORY), on its table's asset, for every history
# table of the object (its child tables' too: they are versioned in the same transaction, and one
# check per object, not per table, keeps a run's check events few). Evaluated in the publishing
# transaction: one that fails rolls the object back (see `destinations.history`).
HISTORY_CHECK = "history_versions_consistent"
DECLARATIONS[HISTORY_CHECK] = CheckDeclaration(
    HISTORY_CHECK,
    dg.AssetCheckSeverity.ERROR,
    "The object's history tables (INVOICED_HISTORY: `<table>_history`, and its child tables',"
    " e.g. `invoice_line_items_history`) agree with its tables: no record has more than one"
    " current version (`one_current_version_per_key`); a record's versions follow one another,"
    " each ending before the next begins and only the last open (`no_overlapping_versions`);"
    " the current versions are exactly the published rows, column for column"
    " (`current_versions_match_table`). Each figure is the count of offending rows, over every"
    " history table checked (`history_tables`).",
)


def check_names_for(*, is_child: bool, has_customer: bool, versioned: bool = False) -> list[str]:
    names = [PRIMARY_KEY, COLLAPSE]
    names.append(PARENT_REFERENCES if is_child else ROW_COUNT)
    if has_customer and not is_child:
        names.append(CUSTOMER_REFERENCES)
    if versioned and not is_child:  # one for the object's every history table
        names.append(HISTORY_CHECK)
    return names


def check_spec(asset_key: dg.AssetKey, name: str) -> dg.AssetCheckSpec:
    declaration = DECLARATIONS[name]
    return dg.AssetCheckSpec(
        name,
        asset=asset_key,
        description=declaration.description,
        blocking=declaration.blocking,
    )


def check_result(asset_key: dg.AssetKey, name: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=name,
        passed=outcome.passed,
        severity=DECLARATIONS[name].severity,
        metadata=outcome.metadata,
    )
