"""Turn Invoiced records into typed tables: pure functions, no Dagster, no database.

A `TableBuilder` takes pages of records as they arrive and keeps them column by column (nested
objects already as JSON text), so a listing never has to be held as raw dicts; given a
`BatchDirectory`, it writes every few thousand rows to disk (see `batches`), so a long listing
is never held whole either. `finish()` gives a `ShapedTable`: the column types and its rows as
*wire values* (in memory or in batch files) that a destination casts exactly. How values become
wire values and which type a column gets are the rules of `conversions`.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from invoiced_assets.catalogue import ChildTable, FieldSpec, FieldType, InvoicedObject
from invoiced_assets.tables.batches import (
    BatchDirectory,
    FrameData,
    TableData,
    WrittenBatch,
    batch_files,
    write_batch,
)
from invoiced_assets.tables.conversions import (
    NESTED_TYPES,
    JsonText,
    column_type,
    to_json_text,
    wire_array,
)

POSITION_COLUMN = "position"
# A child list of plain values (not objects) holds each one in this column.
VALUE_COLUMN = "value"
VALUE_DESCRIPTION = "The list element itself, when the API sends plain values, not objects."


@dataclass(frozen=True)
class Column:
    name: str
    type: FieldType


@dataclass
class ShapedTable:
    """One warehouse table's content, ready for a destination to write."""

    name: str
    key: tuple[str, ...]
    columns: list[Column]
    data: TableData
    # Columns whose values did not fit the catalogue's type in this load: name -> (from, to).
    widened: dict[str, tuple[FieldType, FieldType]] = field(default_factory=dict)
    # Columns the catalogue does not know, seen in this load.
    unknown_columns: list[str] = field(default_factory=list)

    @classmethod
    def of_frame(
        cls, name: str, key: tuple[str, ...], columns: list[Column], frame: pd.DataFrame
    ) -> "ShapedTable":
        """A table held in memory (read back from a warehouse, merged, or built in a test)."""
        return cls(name, key, columns, FrameData(frame))

    @property
    def row_count(self) -> int:
        return self.data.row_count

    @property
    def frame(self) -> pd.DataFrame:
        """Every row at once, in wire form (a table written in batches is read back whole)."""
        return self.data.to_frame()

    def column(self, name: str) -> pd.Series:
        """One column's values, every row (read alone from a table written in batches)."""
        return self.data.columns([name])[name]

    def key_frame(self) -> pd.DataFrame:
        """The key's columns that the table has, every row."""
        names = {c.name for c in self.columns}
        return self.data.columns([column for column in self.key if column in names])

    def column_types(self) -> dict[str, FieldType]:
        return {c.name: c.type for c in self.columns}

    def empty_like(self) -> "ShapedTable":
        """The same table with no rows (to remove rows in a merge without adding any)."""
        return ShapedTable.of_frame(self.name, self.key, list(self.columns), self.data.head(0))


class TableBuilder:
    """Accumulates one table column by column from pages of records.

    With a `BatchDirectory`, every `rows_per_batch` rows are written to disk as one Arrow batch and
    dropped from memory (see `tables.batches`); without one, the table is held until `finish()`.
    """

    def __init__(
        self,
        name: str,
        fields: Sequence[FieldSpec],
        *,
        key: tuple[str, ...],
        leading: Sequence[FieldSpec] = (),
        excluded: Iterable[str] = (),
        batches: BatchDirectory | None = None,
    ) -> None:
        self.name = name
        self.key = key
        self._declared: dict[str, FieldType] = {f.name: f.type for f in (*leading, *fields)}
        self._leading = [f.name for f in leading]
        self._excluded = frozenset(excluded)
        self._columns: dict[str, list[Any]] = {name: [] for name in self._declared}
        # The Python types seen in each column: in the whole table, and in the rows held.
        self._types: dict[str, set[type]] = {name: set() for name in self._declared}
        self._held_types: dict[str, set[type]] = {name: set() for name in self._declared}
        self._rows = 0  # rows held in memory
        self._batches = batches
        self._written: list[WrittenBatch] = []

    def add_rows(self, rows: Sequence[Mapping[str, Any]], leading: Sequence[tuple] = ()) -> None:
        """Append records; `leading[i]` holds the leading columns' values of row i."""
        if not rows:
            return
        seen = set().union(*(row.keys() for row in rows)) - self._excluded
        for name in seen.difference(self._columns):
            self._columns[name] = [None] * self._rows
            self._types[name] = set()
            self._held_types[name] = set()
        for position, name in enumerate(self._leading):
            self._extend(name, [values[position] for values in leading])
        leading_names = set(self._leading)
        for name, column in self._columns.items():
            if name not in leading_names:
                self._extend(name, [row.get(name) for row in rows], column)
        self._rows += len(rows)
        if self._batches is not None and self._rows >= self._batches.rows_per_batch:
            self._write_batch(self._batches)

    def _extend(self, name: str, values: list[Any], column: list[Any] | None = None) -> None:
        # Hot path (every value of every page): set comprehensions over types, not per-value calls.
        value_types = {type(v) for v in values}
        if dict in value_types or list in value_types:
            values = [to_json_text(v) if type(v) in NESTED_TYPES else v for v in values]
            value_types = (value_types - {dict, list}) | {JsonText}
        self._held_types[name] |= value_types
        (self._columns[name] if column is None else column).extend(values)

    def _column_type(self, name: str, value_types: set[type]) -> FieldType:
        return column_type(self._declared.get(name), value_types)

    def _write_batch(self, batches: BatchDirectory) -> None:
        """Write the rows held as one batch, each column of the type its values need so far."""
        arrays: dict[str, tuple[FieldType, pa.Array]] = {}
        for name, values in self._columns.items():
            held = self._held_types[name]
            field_type = self._column_type(name, held)
            arrays[name] = (field_type, wire_array(values, field_type, held))
            self._types[name] |= held
        self._written.append(write_batch(batches.new_file(self.name), arrays))
        self._columns = {name: [] for name in self._columns}
        self._held_types = {name: set() for name in self._columns}
        self._rows = 0

    def finish(self) -> ShapedTable:
        for name, held in self._held_types.items():
            self._types[name] |= held
        final = {name: self._column_type(name, self._types[name]) for name in self._columns}
        widened = {
            name: (declared, final[name])
            for name, declared in self._declared.items()
            if final[name] is not declared
        }
        unknown = [name for name in self._columns if name not in self._declared]
        columns = [Column(name, field_type) for name, field_type in final.items()]
        data: TableData
        if self._written:
            if self._rows:
                assert self._batches is not None
                self._write_batch(self._batches)
            data = batch_files(self._written, final)
        else:
            frame = pd.DataFrame(
                {
                    name: pd.arrays.ArrowExtensionArray(
                        wire_array(values, final[name], self._types[name])
                    )
                    for name, values in self._columns.items()
                },
                index=pd.RangeIndex(self._rows),
            )
            data = FrameData(frame)
        return ShapedTable(self.name, self.key, columns, data, widened, unknown)


class ObjectShaper:
    """Shapes one object's pages into its table and its child tables in a single pass."""

    def __init__(
        self,
        obj: InvoicedObject,
        tables: Iterable[str] | None = None,
        *,
        batches: BatchDirectory | None = None,
    ) -> None:
        wanted = None if tables is None else set(tables)
        self.obj = obj
        self.ids: set[Any] = set()  # every primary key seen, even when the table is not built
        self.max_updated_at: int | None = None
        self.max_id: int | None = None
        self._parent: TableBuilder | None = None
        if wanted is None or obj.name in wanted:
            self._parent = TableBuilder(
                obj.name,
                obj.fields,
                key=(obj.primary_key,),
                excluded=[child.source_field for child in obj.children],
                batches=batches,
            )
        self._children: list[tuple[ChildTable, TableBuilder]] = [
            (child, child_builder(obj, child, batches=batches))
            for child in obj.children
            if wanted is None or child.name in wanted
        ]

    def add_page(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Add a page; a record already added (overlapping reads, offset paging) is skipped."""
        if self.obj.flatten:
            records = [flatten(record, self.obj.flatten) for record in records]
        key = self.obj.primary_key
        if any(record.get(key) in self.ids for record in records):
            records = [record for record in records if record.get(key) not in self.ids]
        self.ids.update(record.get(key) for record in records)
        updated = [r.get("updated_at") for r in records if isinstance(r.get("updated_at"), int)]
        if updated:
            self.max_updated_at = max(self.max_updated_at or 0, *updated)
        if self.obj.append_only and records:
            self.max_id = max(self.max_id or 0, *(int(r[key]) for r in records))
        if self._parent is not None:
            self._parent.add_rows(records)
        for child, builder in self._children:
            rows: list[Mapping[str, Any]] = []
            leading: list[tuple[Any, int]] = []
            for record in records:
                for position, element in enumerate(record.get(child.source_field) or ()):
                    rows.append(
                        element if isinstance(element, Mapping) else {VALUE_COLUMN: element}
                    )
                    leading.append((record.get(self.obj.primary_key), position))
            builder.add_rows(rows, leading)

    def finish(self) -> dict[str, ShapedTable]:
        builders = ([self._parent] if self._parent else []) + [b for _, b in self._children]
        return {builder.name: builder.finish() for builder in builders}


def flatten(record: Mapping[str, Any], nested: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """`{"data": {"object": x}}` as `{"data_object": x}` for each listed nested field and key."""
    flat = {name: value for name, value in record.items() if name not in nested}
    for name, keys in nested.items():
        inner = record.get(name) or {}
        for key in keys:
            flat[f"{name}_{key}"] = inner.get(key) if isinstance(inner, Mapping) else None
    return flat


def child_key_fields(obj: InvoicedObject, child: ChildTable) -> tuple[FieldSpec, FieldSpec]:
    """The columns every child row starts with: its parent's key and its place in the list."""
    parent_key_type = next(
        (f.type for f in obj.fields if f.name == obj.primary_key), FieldType.INTEGER
    )
    parent = child.parent_key_column.removesuffix("_id").replace("_", " ")
    return (
        FieldSpec(
            child.parent_key_column,
            parent_key_type,
            f"ID of the {parent} this row belongs to (`{obj.name}.{obj.primary_key}`).",
        ),
        FieldSpec(
            POSITION_COLUMN,
            FieldType.INTEGER,
            f"Place of this row in the {parent}'s `{child.source_field}` list, counting from 0.",
        ),
    )


def child_builder(
    obj: InvoicedObject, child: ChildTable, *, batches: BatchDirectory | None = None
) -> TableBuilder:
    return TableBuilder(
        child.name,
        child.fields,
        key=child.key,
        leading=child_key_fields(obj, child),
        batches=batches,
    )


def shape_records(
    obj: InvoicedObject, records: Sequence[Mapping[str, Any]]
) -> dict[str, ShapedTable]:
    """Shape a whole listing at once (convenient for tests and small listings)."""
    shaper = ObjectShaper(obj)
    shaper.add_page(records)
    return shaper.finish()
