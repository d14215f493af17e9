"""Staging one object's read: its tables, and for an incremental run how each merges.

A full read replaces each table whole. An incremental read stages only what changed and says
which published rows give way (`destinations.protocol.Merge`), with the key sets they are
deleted by:
- an object table and its child tables: the rows of every record changed or deleted since the
  last load (a changed invoice's line items are replaced with it);
- a per-customer listing (contacts, payment sources): the rows of every customer whose listing
  was read again, and the rows deleted on their own;
- any table of records the service deletes with their customer or invoice, without an event
  (`deleted_with`: notes, tasks, contacts, payment sources): the rows naming a deleted one;
- an append-only table (events): nothing; the staged rows after the newest id held are added.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from invoiced_assets.catalogue import FieldSpec, FieldType, InvoicedObject, get_object
from invoiced_assets.destinations.backfill import (
    Snapshots,
    staged_deletions,
    staged_snapshots,
    staged_states,
)
from invoiced_assets.destinations.protocol import (
    Destination,
    Merge,
    RowDeletion,
    StagedObject,
    StagedTable,
)
from invoiced_assets.extract.incremental import Deletions
from invoiced_assets.extract.listings import Extraction
from invoiced_assets.extract.snapshots import ObjectSnapshots, record_type
from invoiced_assets.sync.outputs import markdown_preview
from invoiced_assets.tables.shaping import ShapedTable, TableBuilder


@dataclass(frozen=True)
class StagedRead:
    """One object's read, staged: every table (a selected child's parent too), and previews."""

    extraction: Extraction
    tables: Mapping[str, StagedTable]
    previews: Mapping[str, str]
    changed: int = 0
    deleted: int = 0

    def for_publishing(self, selected: Mapping[str, Any], **history: Any) -> StagedObject:
        """What the IO manager publishes: the selected tables only (and, `history`, how the
        versioned ones are versioned: see `protocol.StagedObject`)."""
        tables = {name: t for name, t in self.tables.items() if name in selected}
        return StagedObject(self.extraction.obj.name, tables, **history)


def merges_for(
    extraction: Extraction, deletions: Deletions | None
) -> tuple[dict[str, Merge | None], dict[str, list[Any]]]:
    """How each of the extraction's tables merges, and the key sets the merges delete by."""
    obj, names = extraction.obj, list(extraction.tables or {})
    if not extraction.plan.incremental:
        return dict.fromkeys(names), {}
    if obj.append_only:
        return dict.fromkeys(names, Merge(append_after=obj.primary_key)), {}
    assert deletions is not None
    deleted = deletions.for_object(obj)
    cascaded, cascade_sets = _cascaded_deletions(obj, deletions)
    if obj.per_customer:
        assert extraction.customers_read is not None
        customers, gone = f"{obj.name}_customers", f"{obj.name}_deleted"
        # The rows of every customer read again; those of deleted customers are `cascaded`.
        by_customer = RowDeletion(obj.customer_column, customers)
        merge = Merge((by_customer, RowDeletion(obj.primary_key, gone), *cascaded))
        return dict.fromkeys(names, merge), {
            customers: sorted(extraction.customers_read.ids, key=str),
            gone: sorted(deleted, key=str),
            **cascade_sets,
        }
    replaced = f"{obj.name}_replaced"
    merges: dict[str, Merge | None] = {}
    for child in obj.children:
        merges[child.name] = Merge((RowDeletion(child.parent_key_column, replaced),))
    merges[obj.name] = Merge((RowDeletion(obj.primary_key, replaced), *cascaded))
    changed = extraction.ids or set()
    return {n: merges[n] for n in names}, {
        replaced: sorted(changed | deleted, key=str),
        **cascade_sets,
    }


def _cascaded_deletions(
    obj: InvoicedObject, deletions: Deletions
) -> tuple[tuple[RowDeletion, ...], dict[str, list[Any]]]:
    """The rows the service deleted with their customer or invoice, emitting no event for
    them (`deleted_with`), and the key sets (the deleted parents) they are deleted by."""
    found: list[RowDeletion] = []
    key_sets: dict[str, list[Any]] = {}
    for column, parent in obj.deleted_with.items():
        gone = deletions.for_object(get_object(parent))
        if gone:
            name = f"{obj.name}_{column}_deleted"
            found.append(RowDeletion(column, name))
            key_sets[name] = sorted(gone, key=str)
    return tuple(found), key_sets


def staged_table(shaped: ShapedTable, merge: Merge | None = None) -> StagedTable:
    """What the destination holds once `shaped` is staged."""
    return StagedTable(
        shaped.name,
        shaped.key,
        tuple(shaped.columns),
        shaped.row_count,
        merge,
        dict(shaped.widened),
    )


def stage_read(
    destination: Destination, extraction: Extraction, deletions: Deletions | None
) -> StagedRead:
    """Stage an extraction's tables in the destination; their batch files are freed after."""
    shaped_tables = extraction.tables or {}
    merges, key_sets = merges_for(extraction, deletions)
    previews = {name: markdown_preview(shaped) for name, shaped in shaped_tables.items()}
    destination.stage(list(shaped_tables.items()), key_sets)
    staged = {name: staged_table(shaped, merges[name]) for name, shaped in shaped_tables.items()}
    for shaped in shaped_tables.values():
        shaped.data.release()  # staged: its batch files are not needed any more
    deleted = (
        deletions.for_object(extraction.obj) if deletions and extraction.plan.incremental else set()
    )
    return StagedRead(extraction, staged, previews, len(extraction.ids or ()), len(deleted))


def stage_snapshots(
    destination: Destination, found: ObjectSnapshots, deleted_at: Mapping[str, Mapping[Any, int]]
) -> Snapshots:
    """Stage an object's states from the events beside its tables, with every deletion
    event's time (see `destinations.backfill`)."""
    tables, listed = found.finish()
    obj = found.obj
    deletions = TableBuilder(
        staged_deletions(obj.name), DELETION_FIELDS, key=("d_object", "d_record")
    )
    deletions.add_rows(
        [
            {"d_object": name, "d_record": str(record), "d_at": at}
            for name, times in deleted_at.items()
            for record, at in times.items()
        ]
    )
    staged = [
        *((staged_states(name), shaped) for name, shaped in tables.items()),
        (staged_snapshots(obj.name), listed),
        (staged_deletions(obj.name), deletions.finish()),
    ]
    destination.stage(staged, {})
    for _, shaped in staged:
        shaped.data.release()
    return Snapshots(
        staged_snapshots(obj.name),
        {name: shaped.column_types() for name, shaped in tables.items()},
        record_type(obj),
        staged_deletions(obj.name),
    )


DELETION_FIELDS = (
    FieldSpec("d_object", FieldType.STRING, "Object whose record was deleted."),
    FieldSpec("d_record", FieldType.STRING, "ID of the deleted record."),
    FieldSpec("d_at", FieldType.TIMESTAMP, "When its last deletion event was recorded."),
)
