"""Which checks a table has, and their figures, computed in the warehouse (`destinations.audit`).

An object is audited after it is staged and before it is published: a full load's staged table,
an incremental run's merge result (the rows kept plus the rows staged). Executed on their own, or
for tables the run does not load, the checks audit the published tables.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from invoiced_assets import checks
from invoiced_assets.api import InvoicedClient
from invoiced_assets.catalogue import CUSTOMERS, InvoicedObject
from invoiced_assets.destinations import audit as sql_audit
from invoiced_assets.destinations.protocol import Destination, SqlSession
from invoiced_assets.destinations.sql import relation as merged_relation
from invoiced_assets.sync.planning import TableHistory
from invoiced_assets.sync.staging import StagedRead

# A table's rows as a query of some of its columns: staged, merged or published.
Relation = Callable[[Sequence[str]], str]


@dataclass(frozen=True)
class Evaluation:
    table: str
    check: str
    outcome: checks.CheckOutcome

    @property
    def blocks(self) -> bool:
        return not self.outcome.passed and checks.DECLARATIONS[self.check].blocking


def published_relation(destination: Destination, table: str) -> Relation:
    dialect = destination.dialect

    def select(columns: Sequence[str]) -> str:
        listed = ", ".join(dialect.column(c) for c in columns)
        return f"SELECT {listed} FROM {dialect.published(table)}"

    return select


def _exists(session: SqlSession, destination: Destination, table: str) -> bool:
    return bool(destination.published_columns(session, table))


class TableChecks:
    """Each check's figures for one table, over its rows as this run has them: staged (or
    merged) while its object is not published, else the published table."""

    def __init__(
        self,
        destination: Destination,
        tables: Mapping[str, Any],
        history: Mapping[str, TableHistory],
        min_row_ratio: float,
        accepted_drops: frozenset[str],
    ) -> None:
        self.destination = destination
        self.tables = tables
        self.history = history
        self.min_row_ratio = min_row_ratio
        self.accepted_drops = accepted_drops
        # Objects staged and not (yet) published: their tables' rows are those staged.
        self.staged: dict[str, Relation] = {}

    def relation(self, table: str) -> Relation:
        return self.staged.get(table) or published_relation(self.destination, table)

    def primary_key(self, session: SqlSession, name: str) -> Evaluation:
        key = self.tables[name].primary_key
        outcome = sql_audit.primary_key(
            session, self.destination.dialect, self.relation(name)(key), key
        )
        return Evaluation(name, checks.PRIMARY_KEY, outcome)

    def collapse(self, name: str, rows: int, previous: int | None) -> Evaluation:
        outcome = checks.check_collapse(rows, previous, self.min_row_ratio)
        table = self.tables[name]
        if not outcome.passed and {name, table.obj.name} & self.accepted_drops:
            note = "accepted for this run by the run config's accept_row_drop"
            outcome = checks.CheckOutcome(True, {**outcome.metadata, "accepted": note})
        return Evaluation(name, checks.COLLAPSE, outcome)

    def parent_references(self, session: SqlSession, name: str) -> Evaluation:
        table = self.tables[name]
        assert table.child is not None
        column, key = table.child.parent_key_column, table.obj.primary_key
        outcome = sql_audit.references(
            session,
            self.destination.dialect,
            self.relation(name)([column]),
            column,
            self.relation(table.obj.name)([key]),
            key,
            target=f"{table.obj.name}.{key}",
            nullable=False,
        )
        return Evaluation(name, checks.PARENT_REFERENCES, outcome)

    def customer_references(self, name: str) -> Evaluation:
        """The table's customers against the customers as this run leaves them: published
        (new if they were published in this run, as they were if their audit failed)."""
        column, key = self.tables[name].obj.customer_column, CUSTOMERS.primary_key
        with self.destination.session() as session:
            if not _exists(session, self.destination, CUSTOMERS.name):
                outcome = checks.CheckOutcome(
                    False, {"reason": "no customers table to resolve against: load customers"}
                )
            else:
                outcome = sql_audit.references(
                    session,
                    self.destination.dialect,
                    self.relation(name)([column]),
                    column,
                    published_relation(self.destination, CUSTOMERS.name)([key]),
                    key,
                    target=f"{CUSTOMERS.name}.{key}",
                )
        return Evaluation(name, checks.CUSTOMER_REFERENCES, outcome)


class Auditor(TableChecks):
    """Which checks a run evaluates, and when (`tables`: every `TableAsset`, by name)."""

    def audit(self, read: StagedRead, names: Sequence[str]) -> list[Evaluation]:
        """Every check (but customer references) of the tables `names` of a staged read."""
        extraction = read.extraction
        with self.destination.session() as session:
            dialect = self.destination.dialect
            for name, staged in read.tables.items():
                columns = self.destination.published_columns(session, name)
                self.staged[name] = lambda cols, t=staged, c=columns, d=dialect: merged_relation(
                    d, t, c, cols
                )
            evaluations = []
            for name in names:
                table = self.tables[name]
                key_check = self.primary_key(session, name)
                evaluations.append(key_check)
                rows = int(key_check.outcome.metadata["rows"])
                published = None
                if _exists(session, self.destination, name):
                    published = sql_audit.row_count(
                        session, published_relation(self.destination, name)(table.primary_key)
                    )
                evaluations.append(self.collapse(name, rows, published))
                if table.child is not None:
                    evaluations.append(self.parent_references(session, name))
                    continue
                stats = extraction.stats
                if table.obj.per_customer:
                    # Its X-Total-Count sums the listings read: count the rows staged from them.
                    staged_rows = read.tables[name].rows
                    outcome = checks.check_row_count(staged_rows, stats.total_count, None)
                elif extraction.plan.incremental:
                    # An incremental read's own X-Total-Count counts only the changes.
                    outcome = checks.check_row_count(rows, None, stats.total_count_after)
                else:
                    outcome = checks.check_row_count(
                        rows, stats.total_count, stats.total_count_after
                    )
                evaluations.append(Evaluation(name, checks.ROW_COUNT, outcome))
        return evaluations

    def released(self, read: StagedRead) -> None:
        """The read is published: its tables' rows are the published ones (a parent staged
        only for its child's audit included: its staged rows were never published)."""
        for name in read.tables:
            self.staged.pop(name, None)

    def on_published_tables(
        self, name: str, check: str, count_now: Callable[[], int | None]
    ) -> Evaluation:
        """A check executed on its own: against the published table, loading nothing.

        The row count compares with a one-record request's X-Total-Count (`count_now`); a
        per-customer listing (one request per customer) compares with the count its last load
        recorded.
        """
        table = self.tables[name]
        # Only published tables: whatever this run staged and did not publish is not audited.
        published = TableChecks(
            self.destination, self.tables, self.history, self.min_row_ratio, self.accepted_drops
        )
        with self.destination.session() as session:
            if not _exists(session, self.destination, name):
                reason = f"{name} is not in the destination yet: run the invoiced_sync job"
                return Evaluation(name, check, checks.CheckOutcome(False, {"reason": reason}))
            if check == checks.PRIMARY_KEY:
                return published.primary_key(session, name)
            if check == checks.PARENT_REFERENCES:
                return published.parent_references(session, name)
            if check != checks.CUSTOMER_REFERENCES:
                rows = sql_audit.row_count(session, published.relation(name)(table.primary_key))
        if check == checks.CUSTOMER_REFERENCES:
            return published.customer_references(name)
        history = self.history[name]
        if check == checks.COLLAPSE:
            return published.collapse(name, rows, history.rows)
        if table.obj.per_customer:
            outcome = checks.check_row_count(rows, history.api_total_count, None)
            note = "X-Total-Count summed over every customer's listing at the last load"
            return Evaluation(
                name,
                check,
                checks.CheckOutcome(outcome.passed, {**outcome.metadata, "compared_with": note}),
            )
        total = count_now()
        return Evaluation(name, check, checks.check_row_count(rows, total, total))


def count_now(client: InvoicedClient, obj: InvoicedObject) -> int | None:
    """The object's X-Total-Count now: one one-record request per listing variant."""
    counts = [
        client.object_listing(obj.name, params=variant).count_now() for variant in obj.list_variants
    ]
    return None if None in counts else sum(c for c in counts if c is not None)
