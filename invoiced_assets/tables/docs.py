"""What each column means, as analysts see it: the asset's column schema in the UI, and the table
and column comments in the warehouse (`information_schema`, BI tools).

The words are the catalogue's (one line per field, see `catalogue.fields`) and shaping's for the
columns it adds (a child row's parent key and `position`, a plain list's `value`). A column the
catalogue does not know (schema drift) is described by the day it reached the warehouse,
`added by schema drift on YYYY-MM-DD` (UTC): each publish reads the comments the warehouse holds
and keeps that one, so the date never moves.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Protocol

import dagster as dg

from invoiced_assets.catalogue import CATALOGUE, ChildTable, FieldSpec, FieldType, InvoicedObject
from invoiced_assets.tables.shaping import VALUE_COLUMN, VALUE_DESCRIPTION, child_key_fields

DRIFT_PREFIX = "added by schema drift on "


def documented_fields(
    obj: InvoicedObject, child: ChildTable | None = None
) -> tuple[FieldSpec, ...]:
    """Every column the table always has, in the order shaping gives them, each described."""
    if child is None:
        return obj.fields
    return (*child_key_fields(obj, child), *child.fields)


def column_descriptions(obj: InvoicedObject, child: ChildTable | None = None) -> dict[str, str]:
    """Each column the table can have, and its description (a plain list's `value` too)."""
    described = {f.name: f.description for f in documented_fields(obj, child)}
    if child is not None:
        described.setdefault(VALUE_COLUMN, VALUE_DESCRIPTION)
    return described


def table_comment(obj: InvoicedObject, child: ChildTable | None = None) -> str:
    """The table's description: the object's, or the child's and where it is unnested from."""
    if child is None:
        return obj.description
    return (
        f"{child.description} Unnested from `{obj.name}.{child.source_field}`;"
        f" `{child.parent_key_column}` is the parent's id and `position` the item's"
        " place in the list."
    )


class ColumnSpelling(Protocol):
    """How a warehouse names and types columns (each destination's `Dialect` is one)."""

    def stored_column(self, name: str) -> str: ...

    def sql_type(self, field_type: FieldType) -> str: ...


class LogicalSpelling:
    """The API's names and the catalogue's logical types (`integer`, `decimal`, `json`...)."""

    def stored_column(self, name: str) -> str:
        return name

    def sql_type(self, field_type: FieldType) -> str:
        return field_type.value


def documented_schema(
    obj: InvoicedObject, child: ChildTable | None = None, spelling: ColumnSpelling | None = None
) -> dg.TableSchema:
    """The table's columns as the UI's column schema shows them before any materialization:
    each one's name, type and description (names and types as `spelling` writes them)."""
    spelling = spelling or LogicalSpelling()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                spelling.stored_column(f.name), spelling.sql_type(f.type), description=f.description
            )
            for f in documented_fields(obj, child)
        ]
    )


_TABLES: Mapping[str, tuple[InvoicedObject, ChildTable | None]] = MappingProxyType(
    {
        **{obj.name: (obj, None) for obj in CATALOGUE},
        **{child.name: (obj, child) for obj in CATALOGUE for child in obj.children},
    }
)


def catalogue_table(table: str) -> tuple[InvoicedObject, ChildTable | None] | None:
    """The catalogue entry a table is built from (its object, and the child if it is one)."""
    return _TABLES.get(table)


def drift_description(day: date) -> str:
    return f"{DRIFT_PREFIX}{day.isoformat()}"


def utc_today() -> date:
    """Today in UTC: the day a column schema drift adds is stamped with."""
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class TableComments:
    """A table's comment and its columns' comments by API name: as a warehouse holds them, or
    as a publish writes them (columns without a comment are left out)."""

    table: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)

    def differing_from(self, held: "TableComments") -> "TableComments":
        """The comments of these that `held` does not already have."""
        return TableComments(
            self.table if self.table is not None and self.table != held.table else None,
            {n: text for n, text in self.columns.items() if held.columns.get(n) != text},
        )


def comments_for(
    table: str, columns: Sequence[str], held: TableComments, today: date
) -> TableComments:
    """The comments a published table gets, for its columns `columns`.

    The catalogue's text for the table and every column it describes. A column it does not
    describe keeps the comment the warehouse holds (`added by schema drift on` the day it first
    came), or gets `added by schema drift on <today>`.
    """
    entry = catalogue_table(table)
    known = column_descriptions(*entry) if entry else {}
    return TableComments(
        table_comment(*entry) if entry else held.table,
        {
            name: known.get(name) or held.columns.get(name) or drift_description(today)
            for name in columns
        },
    )
