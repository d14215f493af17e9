"""Publishing an object's staged tables: one transaction for all of them, through the IO manager.

Dagster hands the IO manager one output at a time, but an object's tables (invoices and their
line items, discounts and taxes) must change together. So the step yields, for each table of an
object that passed its audit, a `TableRelease` sharing one `ObjectRelease`, which publishes
every table of the object in one transaction: in the sync step's warehouse thread before the
outputs are yielded (`sync.ahead`), or else when the first of them reaches the IO manager. Each
output then records its own table's materialization with what the publish did to it.

What a reader can see: all of an object's rows as they were, or all of them as published,
never a mix. On Snowflake, whose DDL commits on its own, a new column (null) or a widened type
can be seen just before the rows change, and changed comments just after; DuckDB's DDL and
comments are in the same transaction. Each output's materialization carries its table's column
schema with every column's description (`tables.docs`), the same text as the warehouse's
column comments. Dagster records the materializations one output after another once that
transaction has committed; a process killed between two of them leaves the tables published
and some materializations unrecorded: the next run then starts from the older cursors, which
re-reads a little more and changes nothing (merges are by key).
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from invoiced_assets.catalogue import FieldType
from invoiced_assets.destinations import backfill, history
from invoiced_assets.destinations.history import HistorySpec
from invoiced_assets.destinations.protocol import (
    Destination,
    PublishedColumn,
    PublishedSchema,
    PublishedTable,
    StagedObject,
    StatementObserver,
)
from invoiced_assets.destinations.sql import (
    MergedKeys,
    PublishStatements,
    merged_keys,
    merged_rows_filter,
    publish_statements,
)
from invoiced_assets.tables import docs
from invoiced_assets.tables.docs import TableComments


def publish_object(
    destination: Destination, staged: StagedObject, observe: StatementObserver | None = None
) -> dict[str, PublishedTable]:
    """Publish every table of `staged` in one transaction, then drop what it staged.

    Where DDL commits on its own (Snowflake), the drift statements (a new column, a widened
    type) run first, each atomic, and change no row; the rows change in one transaction after,
    and the comments that changed are written once it has committed.
    """
    dialect = destination.dialect
    notify = observe or (lambda _statement: None)
    today = docs.utc_today()  # one day for every column this publish adds
    with destination.session() as session:

        def run(statement: str) -> int:
            notify(statement)
            return session.change(statement)

        def comment(statement: str) -> None:
            # Outside a transaction: the rows stand whatever a comment does; the next run
            # writes again any comment the table does not hold.
            try:
                run(statement)
            except Exception as error:
                dg.get_dagster_logger().warning(f"Could not write a comment ({error}): {statement}")

        plans: dict[str, PublishStatements] = {
            name: publish_statements(
                dialect,
                table,
                destination.published_columns(session, name),
                destination.published_comments(session, name),
                today=today,
            )
            for name, table in staged.tables.items()
        }
        history_tables = _history_table_statements(destination, session, staged, plans)
        # Versioned in full: a history table that is new, or whose columns differ from its
        # table's (widened since, in a publish that did not version it).
        in_full = {
            spec.name
            for spec in staged.history
            if destination.published_columns(session, spec.name)
            != {
                **_published_types(plans, spec.table),
                **history.META_COLUMNS,
            }
        }
        history_comments = _history_comments(destination, session, staged, plans)
        scopes, scope_statements = _merge_scopes(destination, staged, plans, in_full)
        try:
            if not dialect.transactional_ddl:
                # Each commits on its own: a new column, a wider type; no row changes yet.
                for statements in plans.values():
                    for statement in statements.drift:
                        run(statement)
                    for statement in statements.drift_comments:
                        comment(statement)
                for statement in [*history_tables, *scope_statements]:
                    run(statement)
            run("BEGIN TRANSACTION")
            try:
                if dialect.transactional_ddl:
                    # In the transaction: on DuckDB each statement outside commits (a WAL sync).
                    for statement in [*history_tables, *scope_statements]:
                        run(statement)
                published = _publish_rows(destination, session, staged, plans, run)
                versions = _version(destination, session, staged, plans, run, scopes)
                for name, found in versions.items():  # the table's figures show its history's
                    published[name] = replace(
                        published[name], details={**published[name].details, **found}
                    )
                if dialect.transactional_ddl:
                    for statement in history_comments:
                        run(statement)
                if dialect.transactional_ddl:
                    for statement in destination.drop_staged_statements(staged):
                        run(statement)
                run("COMMIT")
            except BaseException:
                try:
                    session.change("ROLLBACK")
                except Exception:  # never hide the publish's own error under the rollback's
                    dg.get_dagster_logger().warning("The rollback of a failed publish failed.")
                raise
            if not dialect.transactional_ddl:
                for statements in plans.values():
                    for statement in statements.comment_changes:
                        comment(statement)
                for statement in history_comments:
                    comment(statement)
        finally:
            destination.forget_columns([*staged.tables, *(spec.name for spec in staged.history)])
        if not dialect.transactional_ddl:
            for statement in destination.drop_staged_statements(staged):
                try:
                    run(statement)
                except Exception:  # published already: the next run drops what is left
                    dg.get_dagster_logger().warning(f"Could not drop staging: {statement}")
    return published


def _publish_rows(
    destination: Destination,
    session: Any,
    staged: StagedObject,
    plans: dict[str, PublishStatements],
    run: Callable[[str], int],
) -> dict[str, PublishedTable]:
    """Inside the publishing transaction: each table's statements, and what they did."""
    dialect = destination.dialect
    published = {}
    for name, statements in plans.items():
        if dialect.transactional_ddl:
            for statement in (*statements.drift, *statements.drift_comments):
                run(statement)
        deleted = inserted = 0
        for index, statement in enumerate(statements.data):
            changed = run(statement)
            deleted += changed if index in statements.deleting else 0
            inserted += changed if index in statements.inserting else 0
        if dialect.transactional_ddl:
            for statement in statements.comment_changes:
                run(statement)
        rows = session.rows(f"SELECT COUNT(*) FROM {dialect.published(name)}")[0][0]
        described = statements.comments.columns
        published[name] = PublishedTable(
            name,
            destination.table_location(name),
            statements.plan,
            [
                PublishedColumn(
                    dialect.stored_column(c.name), dialect.sql_type(c.type), described.get(c.name)
                )
                for c in statements.plan.columns
            ],
            int(rows),
            deleted,
            inserted,
        )
    return published


def _published_types(plans: dict[str, PublishStatements], table: str) -> dict[str, FieldType]:
    return {c.name: c.type for c in plans[table].plan.columns}


def _history_table_statements(
    destination: Destination, session: Any, staged: StagedObject, plans: dict[str, Any]
) -> list[str]:
    """What creates each history table, or gives it the columns its table gains."""
    return [
        statement
        for spec in staged.history
        for statement in history.table_statements(
            destination.dialect,
            spec,
            _published_types(plans, spec.table),
            destination.published_columns(session, spec.name),
        )
    ]


def _parent_rows(destination: Destination, session: Any, spec: HistorySpec) -> list[str]:
    """Where a child row's parent (its change time) is found: the parent's rows staged by this
    read (selected or not, the parent is read with its children), then the published ones."""
    if spec.parent is None:
        return []
    parent = spec.parent[0]
    dialect = destination.dialect
    published = (
        [dialect.published(parent)] if destination.published_columns(session, parent) else []
    )
    return [dialect.staged(parent), *published]


def _scope_keys(staged: StagedObject, spec: HistorySpec, dialect: Any) -> list[MergedKeys]:
    """The key sets of the records whose versions an incremental publish compares."""
    link = spec.parent[2] if spec.parent is not None else spec.key[0]
    return merged_keys(dialect, staged.tables[spec.table], link, f"{spec.name}_scope")


def _merge_scope(
    dialect: Any,
    staged: StagedObject,
    plans: dict[str, PublishStatements],
    spec: HistorySpec,
    in_full: set[str],
) -> list[MergedKeys] | None:
    """The rows an incremental merge may have changed, as the key sets of their records. None,
    every row: a full load; a merge that widened a column, whose values' text, and so every
    record's hash, changed with it; a table whose history was not published with its last
    publish, or is in `in_full`; a backfill, which adds versions to records the merge did not
    touch."""
    table = staged.tables[spec.table]
    if table.merge is None or table.merge.append_after or plans[spec.table].plan.widened:
        return None
    if spec.table not in staged.history_followed or spec.name in in_full or staged.snapshots:
        return None
    return _scope_keys(staged, spec, dialect)


def _merge_scopes(
    destination: Destination,
    staged: StagedObject,
    plans: dict[str, PublishStatements],
    in_full: set[str],
) -> tuple[dict[str, history.Scope | None], list[str]]:
    """(each history table's scope, by name; the statements that stage the scopes' keys)."""
    scopes: dict[str, history.Scope | None] = {}
    statements = []
    dialect = destination.dialect
    for spec in staged.history:
        merged = _merge_scope(dialect, staged, plans, spec, in_full)
        if merged is None:
            scopes[spec.name] = None
            continue
        scopes[spec.name] = lambda alias, merged=merged: merged_rows_filter(dialect, merged, alias)
        statements += [m.statement for m in merged]
    return scopes, statements


def _history_comments(
    destination: Destination, session: Any, staged: StagedObject, plans: dict[str, Any]
) -> list[str]:
    """The comments of each history table that is new or gains columns: its table's column
    comments, and its own columns'."""
    statements = []
    for spec in staged.history:
        held = destination.published_columns(session, spec.name)
        columns = _published_types(plans, spec.table)
        if held and set(columns) <= set(held):
            continue
        table = plans[spec.table].comments
        comments = TableComments(
            f"Every version of `{spec.table}` (INVOICED_HISTORY): one row per version, valid"
            " from `valid_from` until `valid_to`.",
            {**table.columns, **history.META_DESCRIPTIONS},
        )
        statements += destination.dialect.comment_statements(spec.name, comments)
    return statements


class HistoryCheckFailed(Exception):
    """A history table would break one of its own checks: nothing of the object is published."""


def _version(
    destination: Destination,
    session: Any,
    staged: StagedObject,
    plans: dict[str, PublishStatements],
    run: Callable[[str], int],
    scopes: dict[str, history.Scope | None],
) -> dict[str, dict[str, Any]]:
    """Inside the publishing transaction, once every table has its rows: the history tables'
    new and closed versions (and a backfill's earlier ones), audited before the transaction
    commits; what they did, by the table versioned. Each history table compares the records
    of its scope (`_merge_scopes`; None: every record)."""
    dialect = destination.dialect
    details: dict[str, dict[str, Any]] = {}
    for spec in staged.history:
        columns = _published_types(plans, spec.table)
        scope = scopes[spec.name]
        opened, closed = history.maintenance_statements(
            dialect,
            spec,
            columns,
            staged.deletion_times,
            staged.synced_at,
            scope,
            _parent_rows(destination, session, spec),
        )
        details[spec.name] = {
            "invoiced/versions_opened": run(opened),
            "invoiced/versions_closed": run(closed),
            "invoiced/history_compared": "every record" if scope is None else "records changed",
        }
    if staged.snapshots is not None:
        versioned = {spec.table for spec in staged.history}
        for spec in backfill.ordered_for_backfill(staged.history):
            if spec.parent is not None and spec.parent[0] not in versioned:
                # Its cut-off is its parent's first version: backfilled with it, or not at all.
                details[spec.name]["invoiced/versions_backfilled"] = 0
                details[spec.name]["invoiced/backfill_skipped"] = (
                    f"backfilled only with {spec.parent[0]}, whose history is its cut-off:"
                    " select both"
                )
                continue
            merged, inserted = backfill.backfill_statements(
                dialect,
                spec,
                _published_types(plans, spec.table),
                staged.snapshots,
                staged.synced_at,
            )
            run(merged)
            details[spec.name]["invoiced/versions_backfilled"] = run(inserted)
    for spec in staged.history:
        # One query per history table: one for all of an object's needs more than DuckDB's
        # memory limit gives a statement inside a transaction with its changes.
        columns = _published_types(plans, spec.table)
        found = details[spec.name]
        query = history.checks_query(dialect, spec, columns, scopes[spec.name])
        offending, rows = history.check_figures(session.rows(query)[0])
        for invariant, count in offending.items():
            found[f"invoiced/check/{invariant}"] = count
            if count:
                raise HistoryCheckFailed(
                    f"{spec.name}: {invariant} failed ({count} rows); {staged.name} is not"
                    " published, and every table keeps its last good copy."
                )
        found["invoiced/history_table"] = destination.table_location(spec.name)
        found["invoiced/history_rows"] = int(rows)
    return {spec.table: details[spec.name] for spec in staged.history}


@dataclass
class ObjectRelease:
    """An audited object, published once: by the sync step before it hands on the outputs
    (see `sync.ahead`), or else by the first of its tables' outputs to be handled."""

    staged: StagedObject
    observe: StatementObserver | None = None
    _published: dict[str, PublishedTable] | None = field(default=None, repr=False)

    def published_by(self, destination: Destination) -> dict[str, PublishedTable]:
        if self._published is None:
            self._published = publish_object(destination, self.staged, self.observe)
        return self._published


@dataclass(frozen=True)
class TableRelease:
    """The value of one table's output: its object's release, and which table it is."""

    release: ObjectRelease
    table: str


def published_metadata(published: PublishedTable, widened: dict[str, Any]) -> dict[str, Any]:
    """What the UI shows for a published table (every destination alike)."""
    plan = published.plan
    metadata: dict[str, Any] = {
        "dagster/row_count": published.rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(c.name, c.sql_type, description=c.description)
                for c in published.columns
            ]
        ),
        "dagster/table_name": published.location,
        "invoiced/rows_deleted": published.rows_deleted,
        "invoiced/rows_inserted": published.rows_inserted,
        "schema_changed": plan.changed,
        **published.details,
    }
    if plan.changed:
        metadata["schema_changes"] = dg.MetadataValue.md(
            "\n".join(f"- {line}" for line in plan.describe())
        )
    if widened:
        metadata["columns_widened_from_catalogue"] = ", ".join(
            f"{name} ({old} → {new})" for name, (old, new) in widened.items()
        )
    return metadata


class PublishingIOManager(dg.ConfigurableIOManager):
    """What the destinations' IO managers share: a `TableRelease` output is published (see the
    module docstring); `load_input` reads a published table as a pandas DataFrame.

    A sync step holds one session for all it does (`held_session`). Within it the columns (with
    their comments) of every table in the schema are read by one query at the first look, and
    the tables a publish forgot are read again together at the next look at any of them:
    `information_schema` costs milliseconds per query on DuckDB and a round trip on Snowflake,
    and a query per table made dozens a run.
    """

    _held: Any = PrivateAttr(default=None)
    _schemas: dict[str, PublishedSchema] | None = PrivateAttr(default=None)
    _stale: set[str] = PrivateAttr(default_factory=set)

    def open_session(self) -> AbstractContextManager[Any]:
        """A new connection (each destination's own)."""
        raise NotImplementedError

    def read_schemas(
        self, session: Any, tables: Sequence[str] | None
    ) -> dict[str, PublishedSchema]:
        """The published tables' columns by API name and their comments, from the warehouse in
        one query: of `tables` (not empty), or of every table in the schema (None), staged
        tables left out. A table left out of the answer does not exist."""
        raise NotImplementedError

    @contextmanager
    def held_session(self) -> Iterator[Any]:
        with self.open_session() as session:
            self._held, self._schemas, self._stale = session, None, set()
            try:
                yield session
            finally:
                self._held, self._schemas, self._stale = None, None, set()

    @contextmanager
    def session(self) -> Iterator[Any]:
        if self._held is not None:
            yield self._held
            return
        with self.open_session() as session:
            yield session

    def _schema(self, session: Any, table: str) -> PublishedSchema:
        """In a held session, from the schema read at its first look (`_schemas`), after reading
        again every table forgotten since (`_stale`) if `table` is one; elsewhere, read now."""
        if session is not self._held:
            return self.read_schemas(session, [table]).get(table) or PublishedSchema.absent()
        if self._schemas is None:
            self._schemas, self._stale = self.read_schemas(session, None), set()
        elif table in self._stale:  # every table forgotten since, in one query
            stale = sorted(self._stale)
            for name in stale:
                self._schemas.pop(name, None)
            self._schemas.update(self.read_schemas(session, stale))
            self._stale = set()
        return self._schemas.get(table) or PublishedSchema.absent()

    def published_columns(self, session: Any, table: str) -> dict[str, FieldType]:
        return self._schema(session, table).columns

    def published_comments(self, session: Any, table: str) -> TableComments:
        return self._schema(session, table).comments

    def drop_staged_statements(self, staged: StagedObject) -> list[str]:
        """What drops an object's staged tables and key sets, once it is published."""
        dialect = self.dialect  # type: ignore[attr-defined]
        key_sets = {d.key_set for t in staged.tables.values() if t.merge for d in t.merge.deletions}
        key_sets |= {
            m.key_set for spec in staged.history for m in _scope_keys(staged, spec, dialect)
        }
        snapshots = staged.snapshots.staged_names if staged.snapshots else []
        return [
            f"DROP TABLE IF EXISTS {dialect.staged(t)}" for t in [*staged.tables, *snapshots]
        ] + [f"DROP TABLE IF EXISTS {dialect.key_set(k)}" for k in sorted(key_sets)]

    def forget_columns(self, tables: Iterable[str]) -> None:
        """After a publish: the tables' columns and comments may have changed."""
        if self._schemas is not None:
            self._stale.update(tables)

    def handle_output(self, context: dg.OutputContext, obj: TableRelease) -> None:
        if not isinstance(obj, TableRelease):
            raise TypeError(
                f"The Invoiced IO manager writes the invoiced_tables outputs only, not {type(obj)}."
            )
        published = obj.release.published_by(self)  # type: ignore[arg-type]
        staged = obj.release.staged.tables[obj.table]
        context.add_output_metadata(
            {
                **published_metadata(published[obj.table], dict(staged.widened)),
                "primary_key": ", ".join(staged.key),
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        table = context.upstream_output.asset_key.path[-1]  # type: ignore[union-attr]
        return self.read_frame(table)  # type: ignore[attr-defined]
