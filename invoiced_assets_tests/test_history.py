"""History mode (INVOICED_HISTORY): the versions valid at a moment are the account as it was then.

Over rounds of emulator mutations (updates, deletes, inserts, customers deleted with their
contacts), with a sync after each round, full and incremental, on DuckDB and on fakesnow:
- at the moment of each sync, the versions valid then are exactly the emulator's records, every
  field, deleted records absent;
- at each mutation's moment between two syncs, the same holds for every record that changed at
  most once in between (a sync cannot see a state that lived and died between two syncs);
- the history checks pass, a sync of an unchanged account opens no version, and the history
  tables are published with their tables and recorded by their one materialization (a table
  selected alone writes its history and says so; its unselected children get neither): a
  failed check (a lost current version, found by the
  count of current versions; a second current version of a record the run changed) publishes
  neither the table nor its history; the checks executed on their own (the UI's "Execute")
  check every record and find a version damaged since;
- a backfill from the events log (on the first sync, or a later one) holds every object with
  events as it was at each change's moment before the first sync, every field, on DuckDB and on
  fakesnow, and a second backfill adds nothing.
"""

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from invoiced_assets.catalogue import CATALOGUE, EVENTS
from invoiced_assets.checks import HISTORY_CHECK
from invoiced_assets.component import build_definitions
from invoiced_assets.destinations.history import HISTORY_INVARIANTS
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.settings import SettingsError, load_settings

from .conftest import API_KEY, execute_checks_alone, use_emulator
from .warehouse_compare import expected_rows, same

# Objects whose records have their own events: the moments between syncs are exact for them.
EVENTED = {
    "invoices": ("invoice_line_items", "invoice_discounts", "invoice_taxes"),
    "payments": ("payment_applications",),
    "subscriptions": ("subscription_addons",),
    "credit_notes": ("credit_note_line_items",),
    "customers": (),
}


# Replicated and versioned here: every kind of history (own updated_at, a parent's, deletions
# with events, deletions with a customer, none: the catalogue's plans and credit balance
# adjustments start at the sync's time). The others are switched off to keep the test short.
VERSIONED = [
    "customers", "contacts", "invoices", "payments", "subscriptions", "credit_notes",
    "credit_balance_adjustments", "plans",
]  # fmt: skip
OBJECTS = [o for o in CATALOGUE if o.name in VERSIONED]
# Each table's key, as its history table is versioned by (a child row: parent id, position).
TABLE_KEYS = {o.name: (o.primary_key,) for o in CATALOGUE} | {
    c.name: c.key for o in CATALOGUE for c in o.children
}


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.1, seed=91, api_key=API_KEY) as server:
        disabled = ",".join(o.name for o in CATALOGUE if o.name not in VERSIONED)
        use_emulator(
            monkeypatch,
            server,
            tmp_path / "warehouse.duckdb",
            INVOICED_HISTORY="all",
            INVOICED_DISABLED_OBJECTS=disabled,
        )
        yield server


def snapshot(account: EmulatorServer) -> dict[str, dict[tuple, dict]]:
    return expected_rows(account, OBJECTS)


def sync(instance: dg.DagsterInstance, mode: str = "full") -> dg.ExecuteInProcessResult:
    defs = build_definitions(load_settings())
    job = defs.resolve_job_def("invoiced_sync")
    config = {"ops": {"invoiced_tables": {"config": {"sync_mode": mode}}}}
    result = job.execute_in_process(instance=instance, run_config=config, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def history_metadata(result: dg.ExecuteInProcessResult, label: str) -> dict[str, Any]:
    """One metadata value of each materialization that has it (the versioned tables'), by the
    history table it describes."""
    return {
        f"{m.asset_key.path[-1]}_history": m.metadata[label].value
        for m in result.asset_materializations_for_node("invoiced_tables")
        if label in m.metadata
    }


def versions_opened(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    return history_metadata(result, "invoiced/versions_opened")


def mutate(account: EmulatorServer) -> list[tuple[int, dict[str, dict[tuple, dict]]]]:
    """One round of changes; the account's state after each, with its moment."""
    states = []
    for listing, counts in [
        ("invoices", {"insert": 3, "update": 4, "delete": 2}),
        ("payments", {"insert": 2, "update": 2, "delete": 1}),
        ("subscriptions", {"insert": 1, "update": 3, "delete": 1}),
        ("credit_notes", {"insert": 1, "update": 1, "delete": 1}),
        ("customers", {"insert": 2, "update": 2, "delete": 1}),  # with contacts, notes...
        ("contacts", {"insert": 2, "update": 2}),
        ("plans", {"insert": 1, "update": 1}),
    ]:
        account.mutate(listing, **counts)
        states.append((latest_moment(account), snapshot(account)))
    return states


def latest_moment(account: EmulatorServer) -> int:
    """The account's newest moment: of any change any record or event records."""
    return max(
        int(value)
        for obj in [*OBJECTS, EVENTS]
        for record in account.records(obj.name)
        for field in ("updated_at", "created_at", "timestamp")
        if isinstance(value := record.get(field), int)
    )


def sync_moment(account: EmulatorServer) -> int:
    """A moment just after a sync: versions of records without `updated_at` (credit balance
    adjustments, the catalogue) start at the sync's time; the emulator's clock may run ahead.
    Later mutations are timestamped after it."""
    moment = max(int(time.time()), latest_moment(account))
    account.timestamp_after(moment)
    return moment


def changes_between(account: EmulatorServer, after: int, until: int) -> dict[str, dict]:
    """How many events each record had in (after, until], by object."""
    counted: dict[str, dict] = {}
    for event in account.records("events"):
        if after < int(event["timestamp"]) <= until:
            kind = str(event["type"]).rpartition(".")[0]
            record = (event.get("data") or {}).get("object") or {}
            per_kind = counted.setdefault(kind, {})
            per_kind[record.get("id")] = per_kind.get(record.get("id"), 0) + 1
    return counted


def reading(path: Path) -> duckdb.DuckDBPyConnection:
    """The warehouse, read only: one connection for a test's comparisons (each costs ~60 ms)."""
    return duckdb.connect(str(path), read_only=True)


def as_of(
    warehouse: duckdb.DuckDBPyConnection, table: str, moment: int
) -> tuple[dict[tuple, dict], dict[str, str]]:
    """The versions of `table` valid at `moment`, by key, and the columns' SQL types."""
    at = datetime.fromtimestamp(moment, UTC).replace(tzinfo=None)
    types = dict(
        warehouse.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = 'invoiced' and table_name = ?",
            [table],
        ).fetchall()
    )
    cursor = warehouse.execute(
        f"select * from invoiced.{table}_history where valid_from <= ?"
        " and (valid_to is null or valid_to > ?)",
        [at, at],
    )
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    key = TABLE_KEYS[table]
    keyed = {}
    for row in rows:
        k = tuple(row[column] for column in key)
        assert k not in keyed, f"{table}: two versions of {k} valid at {moment}"
        keyed[k] = row
    return keyed, types


def assert_as_of(
    warehouse: duckdb.DuckDBPyConnection,
    table: str,
    moment: int,
    expected: dict[tuple, dict],
    only: set | None = None,
) -> int:
    """The versions valid at `moment` equal `expected` (the records in `only`, if given)."""
    found, types = as_of(warehouse, table, moment)
    if only is not None:
        found = {k: v for k, v in found.items() if k[0] in only}
        expected = {k: v for k, v in expected.items() if k[0] in only}
    assert set(found) == set(expected), (
        f"{table} at {moment}: missing {sorted(set(expected) - set(found))[:5]},"
        f" extra {sorted(set(found) - set(expected))[:5]}"
    )
    compared = 0
    for key, record in expected.items():
        for column, sent in record.items():
            stored = found[key].get(column)
            assert same(types[column], stored, sent), (table, key, column, stored, sent)
            compared += 1
    return compared


def described_columns(path: Path, table: str) -> list[tuple[str, str]]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(
            "select column_name, comment from duckdb_columns()"
            " where schema_name = 'invoiced' and table_name = ?",
            [table],
        ).fetchall()


def history_checks(result: dg.ExecuteInProcessResult) -> list[Any]:
    """The run's evaluations of the history check, one per versioned object it published."""
    return [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == HISTORY_CHECK
    ]


def assert_checks_passed(result: dg.ExecuteInProcessResult) -> None:
    history = history_checks(result)
    assert history and all(e.passed for e in history)
    published = {
        e.asset_key.path[-1]
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    published_histories = {f"{t}_history" for t in published}
    for evaluation in history:
        figures = {i: evaluation.metadata[i].value for i in HISTORY_INVARIANTS}
        assert figures == dict.fromkeys(HISTORY_INVARIANTS, 0), figures
        # One check per object, on its table's asset, for its child tables' histories too.
        table = evaluation.asset_key.path[-1]
        checked = evaluation.metadata["history_tables"].value.split(", ")
        assert checked[0] == f"{table}_history", checked
        # ...of the tables this run published: a table not selected is not checked.
        assert published_histories >= set(checked), checked
        if table == "invoices":
            children = {"invoice_line_items", "invoice_taxes"} & published
            assert {f"{t}_history" for t in children} <= set(checked), checked


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_the_versions_valid_at_a_moment_are_the_account_then(
    account: EmulatorServer, instance: dg.DagsterInstance, tmp_path: Path, mode: str
) -> None:
    path = tmp_path / "warehouse.duckdb"
    first = sync(instance, mode)
    assert_checks_passed(first)
    synced = [(sync_moment(account), snapshot(account))]
    rounds = []
    for _ in range(2):
        states = mutate(account)
        result = sync(instance, mode)
        assert_checks_passed(result)
        rounds.append((synced[-1][0], states))
        synced.append((sync_moment(account), snapshot(account)))

    compared = 0
    history_tables = set(snapshot(account))
    # One round's moments (the next round repeats them), from its sync to the next.
    (previous, states), following = rounds[0], synced[1][0]
    once = changes_between(account, previous, following)
    with reading(path) as warehouse:
        for moment, state in synced:
            for table in history_tables:
                compared += assert_as_of(warehouse, table, moment, state[table])
        for moment, state in states:
            for obj, children in EVENTED.items():
                kind = obj.removesuffix("s")
                records = {r for r, n in once.get(kind, {}).items() if n == 1}
                untouched = {k[0] for k in state[obj]} - set(once.get(kind, {}))
                for table in (obj, *children):
                    only = records | untouched
                    compared += assert_as_of(warehouse, table, moment, state[table], only)
    assert compared > 10_000


def test_an_unchanged_account_opens_no_version(
    account: EmulatorServer, instance: dg.DagsterInstance
) -> None:
    first = versions_opened(sync(instance))
    assert first["invoices_history"] == len(account.records("invoices"))
    again = versions_opened(sync(instance))
    assert set(again.values()) == {0}, again
    account.mutate("invoices", update=2)
    incremental = sync(instance, "incremental")
    changed = versions_opened(incremental)
    assert changed["invoices_history"] == 2
    assert compared(incremental)["invoices_history"] == "records changed"
    assert {t: n for t, n in changed.items() if not t.startswith("invoice")} == dict.fromkeys(
        [t for t in changed if not t.startswith("invoice")], 0
    )


def compared(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Each history table's `invoiced/history_compared`: every record, or those changed."""
    return history_metadata(result, "invoiced/history_compared")


@pytest.mark.parametrize("gap", ["switched on later", "switched off for a while"])
def test_history_not_kept_by_every_publish_is_compared_in_full(
    invoices_only: EmulatorServer,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gap: str,
) -> None:
    """An incremental run versions only the records it changed, unless the history table missed
    publishes of its table: then every record is compared, and the versions are right again."""
    path = tmp_path / "warehouse.duckdb"
    if gap == "switched on later":
        monkeypatch.setenv("INVOICED_HISTORY", "")
        sync(instance)
    else:
        sync(instance)
        monkeypatch.setenv("INVOICED_HISTORY", "")
        for _ in range(2):
            invoices_only.mutate("invoices", insert=1, update=3, delete=1)
            sync(instance, "incremental")
    monkeypatch.setenv("INVOICED_HISTORY", "invoices")
    invoices_only.mutate("invoices", update=2)
    result = sync(instance, "incremental")
    assert_checks_passed(result)
    assert compared(result)["invoices_history"] == "every record"
    state = expected_rows(invoices_only, [o for o in CATALOGUE if o.name == "invoices"])
    moment = sync_moment(invoices_only)
    with reading(path) as warehouse:
        for table in state:
            assert_as_of(warehouse, table, moment, state[table])
    invoices_only.mutate("invoices", update=2)
    assert compared(sync(instance, "incremental"))["invoices_history"] == "records changed"


def test_history_settings_are_checked() -> None:
    assert load_settings({"INVOICED_HISTORY": "invoices,payments"}).history_objects == {
        "invoices",
        "payments",
    }
    assert "events" not in load_settings({"INVOICED_HISTORY": "all"}).history_objects
    with pytest.raises(SettingsError, match="unknown objects: refunds"):
        load_settings({"INVOICED_HISTORY": "invoices,refunds"})
    with pytest.raises(SettingsError, match="append-only"):
        load_settings({"INVOICED_HISTORY": "events"})
    defs = build_definitions(load_settings({"INVOICED_HISTORY": "payments"}))
    # A history is part of its table's asset (one materialization records both): no asset of
    # its own, one check on the table's.
    assert not [k for k in defs.resolve_all_asset_keys() if k.path[-1].endswith("_history")]
    specs = {s.key.path[-1]: s for s in defs.resolve_all_asset_specs()}
    assert specs["payment_applications"].metadata["invoiced/history_table"] == (
        "payment_applications_history"
    )
    assert "invoiced/history_table" not in specs["invoices"].metadata
    checked = {
        k.asset_key.path[-1]
        for k in defs.resolve_asset_graph().asset_check_keys
        if k.name == HISTORY_CHECK
    }
    assert checked == {"payments"}  # one for the object's history tables


@contextmanager
def snowflake_account(
    monkeypatch: pytest.MonkeyPatch, scale: float, seed: int
) -> Iterator[EmulatorServer]:
    """An emulator synced to Snowflake (fakesnow), its invoices versioned."""
    import fakesnow

    from .test_snowflake import ENVIRONMENT, UNSET

    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    with (
        fakesnow.patch(create_schema_on_connect=False),
        EmulatorServer(scale=scale, seed=seed, api_key=API_KEY) as account,
    ):
        disabled = ",".join(o.name for o in CATALOGUE if o.name not in ("customers", "invoices"))
        use_emulator(
            monkeypatch,
            account,
            INVOICED_DESTINATION="snowflake",
            INVOICED_HISTORY="invoices",
            INVOICED_DISABLED_OBJECTS=disabled,
        )
        yield account


def assert_invoices_as_of_on_snowflake(moments: list[tuple[int, dict]]) -> None:
    """At each moment, the invoices and line items valid then are the account's."""
    from .test_snowflake import query

    for moment, state in moments:
        at = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")
        valid = f"valid_from <= '{at}' and (valid_to is null or valid_to > '{at}')"
        invoices = query(
            f"select id, date_part(epoch_second, updated_at), total"
            f" from invoiced.invoices_history where {valid}"
        )
        assert {(r[0],): (int(r[1]), float(r[2])) for r in invoices} == {
            k: (v["updated_at"], float(v["total"])) for k, v in state["invoices"].items()
        }
        items = query(
            f"select invoice_id, position from invoiced.invoice_line_items_history where {valid}"
        )
        assert {tuple(r) for r in items} == set(state["invoice_line_items"])


def test_history_on_snowflake_follows_the_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    """The same SQL on Snowflake (fakesnow): versions valid at each sync are the records then."""
    from .test_snowflake import query

    with snowflake_account(monkeypatch, scale=0.1, seed=93) as account:
        assert_checks_passed(sync(instance))
        moments = [(sync_moment(account), snapshot(account))]
        for mode in ("full", "incremental"):
            account.mutate("invoices", insert=2, update=3, delete=2)
            result = sync(instance, mode)
            assert_checks_passed(result)
            moments.append((sync_moment(account), snapshot(account)))
        assert compared(result)["invoices_history"] == "records changed"
        assert int(query("select count(*) from invoiced.invoices_history")[0][0]) > len(
            moments[-1][1]["invoices"]
        )
        assert_invoices_as_of_on_snowflake(moments)


@pytest.fixture
def invoices_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """A small account whose invoices alone are versioned."""
    with EmulatorServer(scale=0.05, seed=95, api_key=API_KEY) as server:
        disabled = ",".join(o.name for o in CATALOGUE if o.name not in ("customers", "invoices"))
        use_emulator(
            monkeypatch,
            server,
            tmp_path / "warehouse.duckdb",
            INVOICED_HISTORY="invoices",
            INVOICED_DISABLED_OBJECTS=disabled,
        )
        yield server


@pytest.mark.parametrize(
    "damage",
    [
        # a current version of a record the next run does not touch: the count shows it
        "delete from invoiced.invoices_history where is_current and id = (select min(id)"
        " from invoiced.invoices_history)",
        # a second current version of the record the next run changes
        "insert into invoiced.invoices_history select * from invoiced.invoices_history"
        " where is_current and id = {changed}",
    ],
)
def test_a_failed_history_check_publishes_nothing_of_the_object(
    invoices_only: EmulatorServer, instance: dg.DagsterInstance, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "warehouse.duckdb"
    sync(instance)
    (changed,) = invoices_only.mutate("invoices", update=1)["updated"]
    with duckdb.connect(str(path)) as connection:
        connection.execute(damage.format(changed=changed))
        before = {
            t: connection.execute(f"select * from invoiced.{t} order by all").fetchall()
            for t in ("invoices", "invoice_line_items", "invoices_history")
        }
    defs = build_definitions(load_settings())
    config = {"ops": {"invoiced_tables": {"config": {"sync_mode": "incremental"}}}}
    result = defs.resolve_job_def("invoiced_sync").execute_in_process(
        instance=instance, run_config=config, raise_on_error=False
    )
    assert not result.success
    failures = " ".join(
        str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure
    )
    assert "invoices_history" in failures and "is not published" in failures, failures
    # The failed step's generator (and the session it holds) is freed with its traceback.
    gc.collect()
    with duckdb.connect(str(path)) as connection:
        after = {
            t: connection.execute(f"select * from invoiced.{t} order by all").fetchall()
            for t in before
        }
    assert after == before  # the changed invoice is not published, its history not versioned


BACKFILLED = [
    "customers", "contacts", "payment_sources", "notes", "tasks", "invoices", "payments",
    "subscriptions", "credit_notes", "credit_balance_adjustments",
]  # fmt: skip


def backfill_round(account: EmulatorServer, objects: list) -> list[tuple[int, dict]]:
    """One round of changes to every backfilled object; the account after each, with its moment."""
    moments = []
    for listing, counts in [
        ("invoices", {"insert": 2, "update": 3, "delete": 2}),
        ("payments", {"insert": 1, "update": 2, "delete": 1}),
        ("subscriptions", {"insert": 1, "update": 2, "delete": 1}),
        ("credit_notes", {"insert": 1, "update": 1, "delete": 1}),
        ("customers", {"insert": 1, "update": 2, "delete": 1}),  # and its contacts
        ("contacts", {"insert": 2, "update": 2, "delete": 1}),
        ("payment_sources", {"insert": 1, "update": 2, "delete": 1}),
        ("notes", {"insert": 1, "update": 1, "delete": 1}),
        ("tasks", {"insert": 1, "update": 1, "delete": 1}),
        ("credit_balance_adjustments", {"insert": 1, "update": 1, "delete": 1}),
    ]:
        account.mutate(listing, **counts)
        moments.append((latest_moment(account), expected_rows(account, objects)))
    return moments


def versions_backfilled(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    return history_metadata(result, "invoiced/versions_backfilled")


@pytest.mark.parametrize("when", ["first sync", "later sync"])
def test_a_backfill_builds_the_versions_before_the_first_sync_from_the_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance, when: str
) -> None:
    """Rounds of changes before the first sync; a backfill on that sync, or on a later one after
    more changes, holds the account as it was at each change's moment before the first sync
    (every record with events, every field) and at each sync; a second backfill adds nothing."""
    path = tmp_path / "warehouse.duckdb"
    objects = [o for o in CATALOGUE if o.name in BACKFILLED]
    with EmulatorServer(scale=0.05, seed=97, api_key=API_KEY) as account:
        disabled = ",".join(o.name for o in CATALOGUE if o.name not in BACKFILLED)
        use_emulator(
            monkeypatch,
            account,
            path,
            INVOICED_HISTORY="all",
            INVOICED_DISABLED_OBJECTS=disabled,
        )
        moments = [(latest_moment(account), expected_rows(account, objects))]
        moments += backfill_round(account, objects) + backfill_round(account, objects)
        config = {"ops": {"invoiced_tables": {"config": {"history_backfill": True}}}}
        job = build_definitions(load_settings()).resolve_job_def("invoiced_sync")
        if when == "later sync":
            assert_checks_passed(job.execute_in_process(instance=instance))
            moments.append((sync_moment(account), expected_rows(account, objects)))
            backfill_round(account, objects)  # states a sync never saw: not backfilled
        first = job.execute_in_process(instance=instance, run_config=config)
        assert_checks_passed(first)
        moments.append((sync_moment(account), expected_rows(account, objects)))
        backfilled = versions_backfilled(first)
        assert backfilled["invoices_history"] > 0 and backfilled["contacts_history"] > 0
        compared = 0
        with reading(path) as warehouse:
            for moment, state in moments:
                for table in state:
                    compared += assert_as_of(warehouse, table, moment, state[table])
        assert compared > 10_000
        described = dict(described_columns(path, "invoices_history"))
        assert described["valid_from"].startswith("When this version began")
        assert described["total"] and described["total"] == dict(
            described_columns(path, "invoices")
        ).get("total")
        again = job.execute_in_process(instance=instance, run_config=config)
        assert_checks_passed(again)
        assert set(versions_backfilled(again).values()) == {0}


def test_a_backfill_on_snowflake_builds_the_same_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    """The backfill's SQL on Snowflake (fakesnow): the invoices and line items valid at each
    change's moment before the first sync are the account's then."""
    with snowflake_account(monkeypatch, scale=0.05, seed=99) as account:
        moments = [(latest_moment(account), snapshot(account))]
        for _ in range(2):
            account.mutate("invoices", insert=2, update=3, delete=2)
            moments.append((latest_moment(account), snapshot(account)))
        config = {"ops": {"invoiced_tables": {"config": {"history_backfill": True}}}}
        job = build_definitions(load_settings()).resolve_job_def("invoiced_sync")
        assert_checks_passed(job.execute_in_process(instance=instance, run_config=config))
        assert_invoices_as_of_on_snowflake(moments)


def test_deletion_times_of_any_number_of_records_are_one_relation() -> None:
    """More deletions than one VALUES list takes on Snowflake (16,384 rows): several lists, the
    latest time per record, only the objects asked for."""
    from invoiced_assets.destinations.duckdb_destination import DuckDBDialect
    from invoiced_assets.destinations.history import DeletionTime, deletion_times_relation

    times = [DeletionTime("invoices", str(i), 1_700_000_000 + i) for i in range(25_000)]
    times += [DeletionTime("invoices", "5", 1_800_000_000), DeletionTime("payments", "1", 1)]
    relation = deletion_times_relation(DuckDBDialect("invoiced"), times, ["invoices"])
    assert relation.count("VALUES") == 3
    with duckdb.connect() as connection:
        found = connection.execute(
            f"select count(*), count(distinct d_object),"
            f" max(epoch(d_at)) filter (where d_record = '5') from ({relation})"
        ).fetchone()
    assert found == (25_000, 1, 1_800_000_000)


def test_a_refund_named_transaction_is_no_credit_balance_adjustment() -> None:
    """The service names refunds, charges and payments outside payments `transaction.*` too:
    only an adjustment's (or a subject without a `type`) is a credit balance adjustment's event,
    so no backfill or deletion takes a refund for one."""
    from invoiced_assets.extract.incremental import event_subject

    def event(subject: dict) -> dict:
        return {"id": 1, "type": "transaction.deleted", "data": {"object": subject}}

    refund = event({"id": 9, "object": "transaction", "type": "refund", "amount": 5})
    assert event_subject(refund)[0] is None
    for adjustment in (
        {"id": 9, "type": "adjustment"},
        {"id": 9, "object": "credit_balance_adjustment"},
    ):
        obj, action, subject = event_subject(event(adjustment))
        assert obj is not None and obj.name == "credit_balance_adjustments"
        assert (action, subject["id"]) == ("deleted", 9)
    invoice = {"id": 3, "type": "invoice.paid", "data": {"object": {"id": 3, "status": "paid"}}}
    assert event_subject(invoice)[0].name == "invoices"  # type: ignore[union-attr]


def test_a_line_items_backfill_waits_for_its_invoices(
    invoices_only: EmulatorServer, instance: dg.DagsterInstance
) -> None:
    """A child table selected without its parent is synced with its history, but its backfill
    is skipped and says why: its cut-off is its parent's first version."""
    config = {"ops": {"invoiced_tables": {"config": {"history_backfill": True}}}}
    job = build_definitions(load_settings()).resolve_job_def("invoiced_sync")
    result = job.execute_in_process(
        instance=instance,
        run_config=config,
        asset_selection=[dg.AssetKey(["invoiced", "invoice_line_items"])],
    )
    (items,) = result.asset_materializations_for_node("invoiced_tables")
    assert items.metadata["invoiced/versions_backfilled"].value == 0
    assert "only with invoices," in items.metadata["invoiced/backfill_skipped"].value
    assert items.metadata["invoiced/history_rows"].value > 0


def test_a_table_selected_alone_records_its_history_in_its_materialization(
    invoices_only: EmulatorServer, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """Selecting `invoices` alone writes `invoices_history` and says so in the one
    materialization it records (rows, versions opened, where); the line items, not selected,
    get neither a table nor a history, and their next sync compares every record."""
    job = build_definitions(load_settings()).resolve_job_def("invoiced_sync")
    result = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(["invoiced", "invoices"])]
    )
    (invoices,) = result.asset_materializations_for_node("invoiced_tables")
    assert_checks_passed(result)
    with reading(tmp_path / "warehouse.duckdb") as warehouse:
        rows = warehouse.execute("select count(*) from invoiced.invoices_history").fetchone()[0]
        tables = {
            t
            for (t,) in warehouse.execute(
                "select table_name from duckdb_tables() where schema_name = 'invoiced'"
            ).fetchall()
        }
    assert rows == len(invoices_only.records("invoices")) > 0
    assert invoices.metadata["invoiced/history_rows"].value == rows
    assert invoices.metadata["invoiced/versions_opened"].value == rows
    assert invoices.metadata["invoiced/history_table"].value.endswith("invoices_history")
    assert not {"invoice_line_items", "invoice_line_items_history"} & tables
    (check,) = history_checks(result)
    assert check.metadata["history_tables"].value == "invoices_history"
    assert compared(sync(instance, "incremental"))["invoice_line_items_history"] == "every record"


def test_history_checks_executed_on_their_own_check_every_record(
    invoices_only: EmulatorServer, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """The UI's "Execute" on a table's history check reads the published tables, every record:
    it passes after a sync, and finds a version damaged since, with nothing written."""
    sync(instance)
    defs = build_definitions(load_settings())
    wanted = [dg.AssetCheckKey(dg.AssetKey(["invoiced", "invoices"]), HISTORY_CHECK)]

    def execute_check() -> Any:
        result = execute_checks_alone(defs, instance, wanted)
        assert not result.asset_materializations_for_node("invoiced_tables")
        (evaluation,) = [
            e.asset_check_evaluation_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        return evaluation

    passed = execute_check()
    assert passed.passed
    assert {i: passed.metadata[i].value for i in HISTORY_INVARIANTS} == dict.fromkeys(
        HISTORY_INVARIANTS, 0
    )
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute(
            "update invoiced.invoices_history set record_hash = 'damaged'"
            " where is_current and id = (select min(id) from invoiced.invoices)"
        )
    found = execute_check()
    assert not found.passed
    figures = {i: found.metadata[i].value for i in HISTORY_INVARIANTS}
    assert figures == dict.fromkeys(HISTORY_INVARIANTS, 0) | {"current_versions_match_table": 2}
    # The object's check covers its child tables' histories: a line item's damaged version too.
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute(
            "update invoiced.invoice_line_items_history set record_hash = 'damaged'"
            " where is_current and invoice_id = (select max(id) from invoiced.invoices)"
            " and position = 0"
        )
    found = execute_check()
    assert "invoice_line_items_history" in found.metadata["history_tables"].value
    assert found.metadata["current_versions_match_table"].value == 4  # both tables' damage
