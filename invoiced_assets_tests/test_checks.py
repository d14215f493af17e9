"""Data-quality checks pass on good data and fail on crafted bad data, in the UI's terms.

In SQL: duplicate and null keys, orphan child rows, their examples; pure decisions: counts off
the API's X-Total-Count, a collapse to zero. End to end: every check passes on a faithful load; deleting most customers in
Invoiced trips the collapse check (error) and the invoices' customer references (warning).
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from invoiced_assets import checks
from invoiced_assets.assets import table_assets
from invoiced_assets.catalogue import CATALOGUE
from invoiced_assets.destinations import audit
from invoiced_assets.destinations.duckdb_destination import DuckDBDialect, DuckDBSession
from invoiced_assets.emulator import EmulatorServer

from .conftest import API_KEY, use_emulator
from .test_sync_job import run_sync


def figures_session() -> DuckDBSession:
    """An in-memory DuckDB holding small relations to audit."""
    connection = duckdb.connect()
    connection.execute("create table t (id bigint)")
    connection.execute("insert into t values (1), (2), (3)")
    connection.execute("create table dup (id bigint)")
    connection.execute("insert into dup values (1), (2), (2), (null)")
    connection.execute("create table child (invoice_id bigint, position bigint)")
    connection.execute("insert into child values (1, 0), (1, 1), (2, 0)")
    return DuckDBSession(connection)


DIALECT = DuckDBDialect("main")


def test_primary_key_figures_come_from_sql() -> None:
    session = figures_session()
    good = audit.primary_key(session, DIALECT, "select id from t", ["id"])
    assert good.passed and good.metadata["rows"] == 3
    bad = audit.primary_key(session, DIALECT, "select id from dup", ["id"])
    assert not bad.passed
    assert bad.metadata["duplicated_rows"] == 2 and bad.metadata["null_keys"] == 1
    assert bad.metadata["duplicate_examples"] == "[{'id': 2}]"
    child = audit.primary_key(session, DIALECT, "select * from child", ["invoice_id", "position"])
    assert child.passed
    session.connection.execute("insert into child values (1, 1)")
    assert not audit.primary_key(
        session, DIALECT, "select * from child", ["invoice_id", "position"]
    ).passed


def test_row_count_against_x_total_count() -> None:
    assert checks.check_row_count(100, 100, 100).passed
    assert checks.check_row_count(101, 100, 102).passed  # a record created during the walk
    outcome = checks.check_row_count(90, 100, 100)  # rows lost on the way
    assert not outcome.passed and "allowance" in outcome.metadata
    assert not checks.check_row_count(10, None, None).passed


def test_reference_figures_come_from_sql() -> None:
    session = figures_session()
    resolved = audit.references(
        session, DIALECT, "select id from dup", "id", "select id from t", "id", target="t.id"
    )
    assert resolved.passed and resolved.metadata["null_references"] == 1
    orphan = audit.references(
        session,
        DIALECT,
        "select invoice_id from child union all select 7",
        "invoice_id",
        "select id from t where id > 1",
        "id",
        target="invoices.id",
        nullable=False,
    )
    assert not orphan.passed and orphan.metadata["unresolved"] == 3
    assert orphan.metadata["unresolved_examples"] == "1, 7"
    nulls = audit.references(
        session, DIALECT, "select id from dup", "id", "select id from dup", "id",
        target="x", nullable=False,
    )  # fmt: skip
    assert not nulls.passed


def test_collapse() -> None:
    assert checks.check_collapse(5_000, None, 0.5).passed
    assert checks.check_collapse(4_000, 5_000, 0.5).passed
    assert not checks.check_collapse(0, 5_000, 0.5).passed
    assert not checks.check_collapse(2_000, 5_000, 0.5).passed
    assert checks.check_collapse(0, 0, 0.5).passed


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.2, seed=31, api_key=API_KEY) as server:
        use_emulator(monkeypatch, server, tmp_path / "warehouse.duckdb", DAGSTER_HOME=str(tmp_path))
        yield server


def evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], object]:
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            found[(evaluation.asset_key.path[-1], evaluation.check_name)] = evaluation
    return found


def test_every_check_passes_on_a_faithful_load(account: EmulatorServer) -> None:
    result = run_sync()
    assert result.success
    found = evaluations(result)
    tables = table_assets(CATALOGUE)
    assert len(found) == sum(len(t.check_names) for t in tables) > 3 * len(tables)
    failed = [key for key, evaluation in found.items() if not evaluation.passed]
    assert not failed


TABLES = [
    "customers",
    "contacts",
    "payment_sources",
    "notes",
    "tasks",
    "invoices",
    "invoice_line_items",
]


def test_collapse_and_dangling_customers_are_caught(
    account: EmulatorServer, tmp_path: Path
) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert run_sync(TABLES, instance=instance).success
        account.mutate("customers", delete=account.truth()["customers"] - 10)
        result = run_sync(TABLES, instance=instance)
        found = evaluations(result)
        collapse = found[("customers", checks.COLLAPSE)]
        assert not collapse.passed and collapse.severity == dg.AssetCheckSeverity.ERROR
        assert collapse.metadata["previous_rows"].value > 100
        assert collapse.metadata["rows"].value == 10
        # The customers were not published: the invoices still resolve against them.
        assert found[("invoices", checks.CUSTOMER_REFERENCES)].passed
        assert found[("invoices", checks.COLLAPSE)].passed
        assert found[("invoice_line_items", checks.PARENT_REFERENCES)].passed
        # The drop accepted (the service deleted their contacts, payment sources, notes and
        # tasks with them), the customers are published: the invoices' references dangle.
        accepted = run_sync(
            TABLES,
            instance=instance,
            accept_row_drop=["customers", "contacts", "payment_sources", "notes", "tasks"],
        )
    assert accepted.success
    references = evaluations(accepted)[("invoices", checks.CUSTOMER_REFERENCES)]
    assert not references.passed and references.severity == dg.AssetCheckSeverity.WARN
