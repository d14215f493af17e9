"""Records become typed, drift-tolerant Snowflake tables, replaced atomically (on fakesnow).

Proves, with the real IO manager and the stock connector calls patched by fakesnow: catalogue
types reach the warehouse exactly (NUMBER(38,10) money, UTC TIMESTAMP_NTZ, NUMBER(38,0) with
nulls, VARIANT JSON as sent, BOOLEAN); tables and columns are stored upper case, so users query
them unquoted, while a name that is not an identifier stays as sent; child tables carry parent
id and position; tables read back as pandas through the stock handler; new, vanished, retyped and
reordered fields never fail a load nor lose a value, with the change in the metadata; a failure
during the staging upload or the replacing statement leaves the previous table intact and no
staging table behind; stale staging tables are swept; secrets stay `EnvVar`s, out of metadata.
End to end, the `invoiced_sync` job with INVOICED_DESTINATION=snowflake replicates the
emulator's account exactly, then follows inserts, updates and deletes.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import fakesnow
import pandas as pd
import pytest
import snowflake.connector

from invoiced_assets.assets import table_assets
from invoiced_assets.catalogue import CATALOGUE, INVOICES, PAYMENTS
from invoiced_assets.component import build_definitions
from invoiced_assets.destinations.snowflake_destination import (
    STAGING_PREFIX,
    snowflake_io_manager,
)
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.settings import load_settings
from invoiced_assets.tables.shaping import ShapedTable, shape_records

from .conftest import API_KEY, use_emulator
from .destination_helpers import publish
from .test_sync_job import expected_counts
from .test_tables import INVOICE

# fakesnow warns on every result fetched as Arrow: noise, not a finding.
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")

PASSWORD = "not-a-real-password-5f3a"
ENVIRONMENT = {
    "SNOWFLAKE_ACCOUNT": "fake-account",
    "SNOWFLAKE_USER": "fake_user",
    "SNOWFLAKE_PASSWORD": PASSWORD,
    "SNOWFLAKE_DATABASE": "analytics",  # lower case on purpose: Snowflake stores ANALYTICS
    "SNOWFLAKE_WAREHOUSE": "fake_wh",
    "SNOWFLAKE_ROLE": "fake_role",
}
UNSET = (
    "SNOWFLAKE_PRIVATE_KEY",
    "SNOWFLAKE_PRIVATE_KEY_PATH",
    "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
    "SNOWFLAKE_SCHEMA",
    "DAGSTER_CLOUD_DEPLOYMENT_NAME",
    "DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT",
)


@pytest.fixture(autouse=True)
def warehouse(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh fake Snowflake account, with dummy credentials in the environment."""
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    # Schemas are not created on connect, as on real Snowflake: the IO manager must create them.
    with fakesnow.patch(create_schema_on_connect=False):
        yield


def query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple]:
    connection = snowflake.connector.connect(
        account="fake-account", user="fake_user", password=PASSWORD, database="analytics"
    )
    try:
        return connection.cursor().execute(sql, params).fetchall()
    finally:
        connection.close()


def column_types(table: str) -> dict[str, str]:
    """Stored column names (exact case) and their full Snowflake types."""
    rows = query(
        "select column_name, data_type, numeric_precision, numeric_scale"
        " from analytics.information_schema.columns where table_schema = 'INVOICED'"
        " and table_name = %s order by ordinal_position",
        (table,),
    )
    return {
        name: f"{sql_type}({precision},{scale})" if sql_type == "NUMBER" else sql_type
        for name, sql_type, precision, scale in rows
    }


def table_names() -> set[str]:
    rows = query(
        "select table_name from analytics.information_schema.tables where table_schema = %s",
        ("INVOICED",),
    )
    return {name for (name,) in rows}


def write(tables: dict[str, ShapedTable]) -> dg.ExecuteInProcessResult:
    """Stage `tables` and publish them through the real IO manager, configured from the
    environment."""
    return publish(snowflake_io_manager(schema="INVOICED"), tables)


def metadata_of(result: dg.ExecuteInProcessResult, table: str) -> dict[str, Any]:
    events = result.asset_materializations_for_node("load")
    return next(m for m in events if m.asset_key.path[-1] == table).metadata


def test_types_reach_the_warehouse_exactly() -> None:
    odd = {"id": 2, "total": 10, "date": None, "x-custom-field": "kept as sent"}
    result = write(shape_records(INVOICES, [INVOICE, odd]))
    types = column_types("INVOICES")
    assert types["DATE"] == "TIMESTAMP_NTZ" and types["TOTAL"] == "NUMBER(38,10)"
    assert types["CUSTOMER"] == "NUMBER(38,0)" and types["DRAFT"] == "BOOLEAN"
    assert types["SHIP_TO"] == "VARIANT" and types["METADATA"] == "VARIANT"
    assert types["NAME"] == "TEXT" and types["x-custom-field"] == "TEXT"
    # Known to the catalogue, null in every record: still a typed column.
    assert types["NEXT_PAYMENT_ATTEMPT"] == "TIMESTAMP_NTZ"
    assert types["PAYMENT_PLAN"] == "NUMBER(38,0)"
    assert "ITEMS" not in types and "TAXES" not in types  # they are child tables
    # Stored upper case (what unquoted names resolve to on Snowflake), except the odd name.
    assert all(name.isupper() for name in types if name != "x-custom-field")
    assert {"INVOICES", "INVOICE_LINE_ITEMS", "INVOICE_TAXES"} <= table_names()
    (row,) = query(
        "select name, date, total, balance, customer, ship_to, metadata, draft"
        " from invoiced.invoices where id = 46225"
    )
    assert row[0] == "Zoë's café 🚀"
    assert row[1] == datetime(2014, 11, 18, 6, 0)  # 1416290400 in UTC
    assert row[2] == Decimal("51.15") and row[3] == Decimal("0.1")
    assert row[4] == 15444 and isinstance(row[4], int)
    assert json.loads(row[5]) == INVOICE["ship_to"] and json.loads(row[6]) == INVOICE["metadata"]
    assert row[7] is False
    assert query('select customer, date, "x-custom-field" from invoiced.invoices where id = 2') == [
        (None, None, "kept as sent")
    ]
    # Summed here: fakesnow's SUM of a NUMBER(38,10) returns a float (Snowflake's is exact).
    assert sum(total for (total,) in query("select total from invoiced.invoices")) == Decimal(
        "61.15"
    )

    metadata = metadata_of(result, "invoices")
    assert metadata["dagster/table_name"].value == "ANALYTICS.INVOICED.INVOICES"
    assert metadata["dagster/row_count"].value == 2
    columns = {c.name: c.type for c in metadata["dagster/column_schema"].schema.columns}
    assert columns["TOTAL"] == "NUMBER(38,10)" and columns["x-custom-field"] == "VARCHAR"
    assert not any(PASSWORD in str(value) for value in metadata.values())

    # The same load again: every name maps back to the API's, so nothing counts as a change.
    again = write(shape_records(INVOICES, [INVOICE, odd]))
    assert metadata_of(again, "invoices")["schema_changed"].value is False
    assert table_names() >= {"INVOICES"}
    assert not [name for name in table_names() if name.startswith(STAGING_PREFIX)]


def test_child_tables_and_reading_back_as_pandas() -> None:
    write(shape_records(INVOICES, [INVOICE]))
    items = query(
        "select invoice_id, position, id, quantity, unit_cost, amount, taxes"
        " from invoiced.invoice_line_items order by position"
    )
    assert [(r[0], r[1], r[2]) for r in items] == [(46225, 0, 7), (46225, 1, 8)]
    assert items[1][3:6] == (Decimal("2.5"), Decimal("0.1235"), Decimal("0.31"))
    assert json.loads(items[1][6]) == [{"id": 1, "amount": 0.02}]
    assert query("select invoice_id, position, amount from invoiced.invoice_taxes") == [
        (46225, 0, Decimal("3.85"))
    ]
    assert query("select count(*) from invoiced.invoice_discounts") == [(0,)]
    assert column_types("INVOICE_DISCOUNTS")["AMOUNT"] == "NUMBER(38,10)"

    payment = {
        "id": 61,
        "amount": 39,
        "applied_to": [
            {"type": "invoice", "invoice": 46225, "amount": 39},
            {"type": "credit", "amount": 1.5},
        ],
    }
    write(shape_records(PAYMENTS, [payment, {"id": 62, "amount": 1, "applied_to": None}]))
    assert query(
        "select payment_id, position, type, invoice, amount from"
        " invoiced.payment_applications order by position"
    ) == [(61, 0, "invoice", 46225, Decimal("39")), (61, 1, "credit", None, Decimal("1.5"))]

    # A downstream asset reads the table through the stock pandas handler.
    seen: dict[str, pd.DataFrame] = {}

    @dg.asset(ins={"items": dg.AssetIn(["invoiced", "invoice_line_items"])})
    def item_count(items: pd.DataFrame) -> None:
        seen["items"] = items

    source = dg.AssetSpec(["invoiced", "invoice_line_items"]).with_io_manager_key("io_manager")
    result = dg.materialize(
        [item_count, source],
        selection=[item_count.key],
        resources={"io_manager": snowflake_io_manager(schema="INVOICED")},
    )
    assert result.success
    assert sorted(seen["items"]["id"]) == [7, 8] and "invoice_id" in seen["items"].columns


def test_schema_drift_between_loads_loses_nothing() -> None:
    first = {**INVOICE, "legacy_field": "old"}
    write(shape_records(INVOICES, [first]))
    assert column_types("INVOICES")["LEGACY_FIELD"] == "TEXT"

    # Second load: a new field, a vanished one, integer → decimal and number → string changes,
    # and every field in the reverse order.
    second = {**INVOICE, "new_field": 3, "customer": 15444.5, "subtotal": "55.00 USD"}
    second = dict(reversed(list(second.items())))
    result = write(shape_records(INVOICES, [second]))
    types = column_types("INVOICES")
    assert types["NEW_FIELD"] == "NUMBER(38,0)" and types["LEGACY_FIELD"] == "TEXT"
    assert types["CUSTOMER"] == "NUMBER(38,10)" and types["SUBTOTAL"] == "TEXT"
    assert list(types)[:3] == ["ID", "OBJECT", "CUSTOMER"]  # existing order kept
    assert list(types)[-1] == "NEW_FIELD"  # added after the existing ones
    (row,) = query(
        "select customer, subtotal, new_field, legacy_field, total from invoiced.invoices"
    )
    assert row == (Decimal("15444.5"), "55.00 USD", 3, None, Decimal("51.15"))
    metadata = metadata_of(result, "invoices")
    assert metadata["schema_changed"].value is True
    text = metadata["schema_changes"].value
    assert "added column new_field" in text and "legacy_field not sent any more" in text
    assert "customer widened from integer to decimal" in text
    assert "subtotal widened from decimal to string" in text

    # Third load back to integers: a widened column is never narrowed again.
    write(shape_records(INVOICES, [INVOICE]))
    assert column_types("INVOICES")["CUSTOMER"] == "NUMBER(38,10)"
    assert query("select customer, subtotal from invoiced.invoices") == [
        (Decimal("15444"), "55.0000000000")
    ]


def _fail_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    """The staging upload loads its rows, then the connection drops."""
    import snowflake.connector.pandas_tools as pandas_tools

    upload = pandas_tools.write_pandas

    def failing(*args: Any, **kwargs: Any) -> Any:
        upload(*args, **kwargs)
        raise ConnectionError("connection lost after the upload")

    monkeypatch.setattr(pandas_tools, "write_pandas", failing)


def _break_json(tables: dict[str, ShapedTable]) -> None:
    """`ship_to` holds text that is not JSON: PARSE_JSON fails inside the replacing statement."""
    tables["invoices"].frame.loc[1, "ship_to"] = "{not json"


@pytest.mark.parametrize("failure", ["upload", "replace"])
def test_failed_write_leaves_previous_table_intact(
    failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snowflake.connector.pandas_tools as pandas_tools

    working_upload = pandas_tools.write_pandas
    write(shape_records(INVOICES, [INVOICE, {"id": 1}, {"id": 2}]))
    tables = shape_records(INVOICES, [INVOICE, {**INVOICE, "id": 3}, {"id": 4, "new": 1}])
    if failure == "upload":
        _fail_upload(monkeypatch)
    else:
        _break_json(tables)
    with pytest.raises(Exception, match="connection lost" if failure == "upload" else "(?i)json"):
        write({"invoices": tables["invoices"]})
    assert query("select id from invoiced.invoices order by id") == [(1,), (2,), (46225,)]
    types = column_types("INVOICES")
    assert types["SHIP_TO"] == "VARIANT" and "NEW" not in types
    # What the failed run staged stays for inspection, until the next run clears it.
    monkeypatch.setattr(pandas_tools, "write_pandas", working_upload)
    write(shape_records(INVOICES, [INVOICE]))
    assert not [name for name in table_names() if name.startswith(STAGING_PREFIX)]


def test_leftover_staging_tables_are_dropped_by_the_next_run() -> None:
    write(shape_records(INVOICES, [INVOICE]))
    for name in ("STAGED_INVOICES", "WIRE_PAYMENTS", "KEYS_INVOICES_REPLACED"):
        query(f'create transient table analytics.invoiced."{STAGING_PREFIX}{name}" ("C0" VARCHAR)')
    write(shape_records(INVOICES, [INVOICE]))
    assert not [name for name in table_names() if name.startswith(STAGING_PREFIX)]


def test_credentials_stay_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = snowflake_io_manager(schema="INVOICED")
    connection = manager.snowflake
    assert connection.password == dg.EnvVar("SNOWFLAKE_PASSWORD")
    assert connection.private_key is None
    assert connection.warehouse == dg.EnvVar("SNOWFLAKE_WAREHOUSE")
    assert PASSWORD not in repr(manager)
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY", "LS0tLS1CRUdJTi...")
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", "not-a-real-passphrase")
    monkeypatch.delenv("SNOWFLAKE_ROLE")
    manager = snowflake_io_manager(schema="INVOICED_BRANCH_PR_7")
    connection = manager.snowflake
    assert connection.private_key == dg.EnvVar("SNOWFLAKE_PRIVATE_KEY")
    assert connection.private_key_password == dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE")
    assert connection.password is None and connection.role is None  # one credential
    assert manager.schema_name == "INVOICED_BRANCH_PR_7"


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.2, seed=31, api_key=API_KEY) as server:
        use_emulator(monkeypatch, server, INVOICED_DESTINATION="snowflake")
        yield server


def run_sync() -> dg.ExecuteInProcessResult:
    defs = build_definitions(load_settings())
    return defs.resolve_job_def("invoiced_sync").execute_in_process(raise_on_error=False)


def table_counts() -> dict[str, int]:
    return {
        name.lower(): query(f"select count(*) from invoiced.{name}")[0][0] for name in table_names()
    }


def test_sync_job_replicates_the_account_and_follows_changes(account: EmulatorServer) -> None:
    first = run_sync()
    assert first.success
    assert table_counts() == expected_counts(account)
    assert len(table_counts()) == len(table_assets(CATALOGUE))
    materialized = first.asset_materializations_for_node("invoiced_tables")
    names = {m.metadata["dagster/table_name"].value for m in materialized}
    assert "ANALYTICS.INVOICED.INVOICE_LINE_ITEMS" in names
    assert len(names) == len(table_assets(CATALOGUE))
    assert not any(PASSWORD in str(v) for m in materialized for v in m.metadata.values())

    changes = {
        name: account.mutate(name, insert=3, update=4, delete=2)
        for name in ("customers", "invoices", "payments", "subscriptions", "credit_notes")
    }
    assert run_sync().success
    assert table_counts() == expected_counts(account)
    for name, change in changes.items():
        ids = {i for (i,) in query(f"select id from invoiced.{name}")}
        assert set(change["inserted"]) <= ids, name
        assert not set(change["deleted"]) & ids, name
        truth = {r["id"]: r for r in account.records(name)}
        for record_id in change["updated"]:
            (updated_at,) = query(f"select updated_at from invoiced.{name} where id = {record_id}")
            expected = datetime.fromtimestamp(truth[record_id]["updated_at"], UTC)
            assert updated_at == (expected.replace(tzinfo=None),), (name, record_id)
    items = query("select invoice_id, id from invoiced.invoice_line_items")
    truth_items = {(r["id"], i["id"]) for r in account.records("invoices") for i in r["items"]}
    assert set(items) == truth_items
    assert {o.name for o in CATALOGUE} <= set(table_counts())


def test_incremental_sync_on_snowflake(
    account: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Incremental mode reads Snowflake tables back and merges changes exactly."""
    monkeypatch.setenv("INVOICED_SYNC_MODE", "incremental")
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        defs = build_definitions(load_settings())
        job = defs.resolve_job_def("invoiced_sync")
        account.reset_stats()
        assert job.execute_in_process(instance=instance).success
        full_requests = account.stats()["requests"]
        account.mutate("invoices", insert=3, update=5, delete=2)
        account.mutate("customers", insert=2, update=2, delete=1)
        account.mutate("credit_balance_adjustments", insert=2, delete=1)
        account.reset_stats()
        second = job.execute_in_process(instance=instance)
    assert second.success
    kinds = {
        m.asset_key.path[-1]: m.metadata["invoiced/sync_kind"].value
        for m in second.asset_materializations_for_node("invoiced_tables")
    }
    always_full = {t.table for t in table_assets(CATALOGUE) if not t.obj.incremental}
    assert {name for name, kind in kinds.items() if kind == "full"} == always_full
    assert account.stats()["requests"] < full_requests / 4
    assert table_counts() == expected_counts(account)
    stored = dict(query("select id, total from invoiced.invoices"))
    for record in account.records("invoices"):
        assert stored[record["id"]] == Decimal(repr(record["total"])), record["id"]
    items = query("select invoice_id, id from invoiced.invoice_line_items")
    truth_items = {(r["id"], i["id"]) for r in account.records("invoices") for i in r["items"]}
    assert set(items) == truth_items


def test_a_table_in_batches_is_uploaded_batch_by_batch_into_one_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from invoiced_assets.destinations import snowflake_destination
    from invoiced_assets.tables.batches import BatchDirectory

    from .test_batches import drifting_invoices, shape

    records = drifting_invoices(300, seed=6)
    assert write(shape(records, None)).success
    sql = "select * from invoiced.invoices order by id"
    whole = query(sql)
    with BatchDirectory(str(tmp_path), rows_per_batch=40) as batches:
        batched = shape(records, batches)
        # A batch is written after the page (of 100) that fills it: three here.
        assert len(batched["invoices"].data.paths) == 3  # type: ignore[attr-defined]
        # Uploads group batches up to UPLOAD_ROWS: here 200 rows, then 100.
        monkeypatch.setattr(snowflake_destination, "UPLOAD_ROWS", 150)
        uploads: list[int] = []
        upload = snowflake_destination._upload

        def counting_upload(connection: Any, frame: pd.DataFrame, *args: Any) -> None:
            uploads.append(len(frame))
            upload(connection, frame, *args)

        monkeypatch.setattr(snowflake_destination, "_upload", counting_upload)
        assert write({"invoices": batched["invoices"]}).success
        assert uploads == [200, 100]
    assert query(sql) == whole and len(whole) == 300
    assert not [name for name in table_names() if name.startswith(STAGING_PREFIX)]
