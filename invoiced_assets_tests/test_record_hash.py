"""A history version's `record_hash` is the MD5 of the text the README documents: each non-null
column, in name order, as `name=<length>:<text>`, a null adding nothing. Its SQL may change for
speed, never its value: history tables written by earlier releases keep their current versions,
and a run after an upgrade opens no version for an unchanged record.
"""

import hashlib
from decimal import Decimal

import duckdb

from invoiced_assets.catalogue import FieldType
from invoiced_assets.destinations import history
from invoiced_assets.destinations.duckdb_destination import DuckDBDialect

COLUMNS = {
    "status": FieldType.STRING,
    "id": FieldType.INTEGER,
    "total": FieldType.DECIMAL,
    "paid": FieldType.BOOLEAN,
    "notes": FieldType.STRING,
}


def documented_hash(values: dict[str, str | None]) -> str:
    text = "".join(
        f"{name}={len(value)}:{value}"
        for name, value in sorted(values.items())
        if value is not None
    )
    return hashlib.md5(text.encode()).hexdigest()


def test_the_record_hash_is_the_md5_of_the_documented_text() -> None:
    dialect = DuckDBDialect("invoiced")
    connection = duckdb.connect()
    connection.execute(
        "create table t as select 'paid' as status, 42::bigint as id,"
        " 12.50::decimal(38, 2) as total, true as paid, null::varchar as notes"
    )
    (found,) = connection.execute(
        f"select {history.record_hash(dialect, COLUMNS, 't')} from t"
    ).fetchone()
    assert found == documented_hash(
        {
            "status": "paid",
            "id": "42",
            "total": str(Decimal("12.50")),
            "paid": "true",
            "notes": None,
        }
    )


def test_a_record_of_nulls_hashes_the_empty_text() -> None:
    dialect = DuckDBDialect("invoiced")
    connection = duckdb.connect()
    connection.execute("create table t as select null::varchar as status, null::bigint as id")
    columns = {"status": FieldType.STRING, "id": FieldType.INTEGER}
    (found,) = connection.execute(
        f"select {history.record_hash(dialect, columns, 't')} from t"
    ).fetchone()
    assert found == hashlib.md5(b"").hexdigest()
