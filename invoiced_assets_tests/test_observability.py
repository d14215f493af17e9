"""Every sync says what it did, in the UI, without ever showing the key; failures stay contained.

Proves: a materialization carries row count, column schema, table location, API pages, requests,
retries, 429s, bytes, duration, records/s, a preview and schema-change flags; the key appears in no
event, log line or metadata, even with retries; long listings log their progress; one object that
cannot be read fails the run but the others are written and its table keeps its last good copy;
the webserver (the UI's GraphQL API) shows assets, child tables, checks, job, schedule and
metadata.
"""

import dataclasses
import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import dagster as dg
import duckdb
import pytest
import requests

from invoiced_assets import catalogue, component
from invoiced_assets.api import ListingStats
from invoiced_assets.emulator import EmulatorServer, FaultConfig
from invoiced_assets.extract import listings

from .conftest import API_KEY, use_emulator
from .test_sync_job import EXPECTED_METADATA, run_sync


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.2, seed=41, api_key=API_KEY) as server:
        use_emulator(monkeypatch, server, tmp_path / "warehouse.duckdb")
        yield server


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The definitions' API resource backs off for milliseconds between retries (as
    `fast_resource` does), not the default half second and up: the same requests are retried,
    counted and logged, only sooner."""
    resource = functools.partial(
        component.InvoicedResource, backoff_initial_seconds=0.001, backoff_max_seconds=0.01
    )
    monkeypatch.setattr(component, "InvoicedResource", resource)


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetMaterialization]:
    return {
        m.asset_key.path[-1]: m for m in result.asset_materializations_for_node("invoiced_tables")
    }


def test_materialization_metadata(account: EmulatorServer, quick_retries: None) -> None:
    account.set_faults(FaultConfig(fault_rate=0.2, retry_after_seconds=0, fault_seed=3))
    result = run_sync()
    assert result.success
    invoices = materializations(result)["invoices"].metadata
    assert set(invoices) >= EXPECTED_METADATA
    assert invoices["dagster/row_count"].value == account.truth()["invoices"]
    columns = {c.name: c.type for c in invoices["dagster/column_schema"].value.columns}
    assert columns["total"] == "DECIMAL(38,10)" and columns["date"] == "TIMESTAMP"
    assert invoices["dagster/table_name"].value.endswith("invoiced.invoices")
    assert "warehouse.duckdb" in invoices["dagster/table_name"].value
    assert invoices["preview"].value.startswith("|") and " id " in invoices["preview"].value
    retries = sum(m.metadata["api_retries"].value for m in materializations(result).values())
    assert retries > 0 and invoices["api_seconds"].value > 0


def test_key_never_reaches_events_or_logs(
    account: EmulatorServer, quick_retries: None, caplog: pytest.LogCaptureFixture
) -> None:
    account.set_faults(FaultConfig(fault_rate=0.3, retry_after_seconds=0, fault_seed=9))
    with dg.instance_for_test() as instance:
        # A paged listing, a listing per customer and their checks: every kind of request.
        result = run_sync(["customers", "invoices", "payment_sources"], instance=instance)
        assert result.success
        records = instance.all_logs(result.run_id)
        texts = [str(record) for record in records]
        texts += [record.user_message or "" for record in records]
    texts.append(caplog.text)
    assert any("retry" in text.lower() for text in texts)  # retries happened and were logged
    for text in texts:
        assert API_KEY not in text


def test_progress_is_logged(account: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listings, "PROGRESS_LOG_INTERVAL_SECONDS", 0.0)
    with dg.instance_for_test() as instance:
        result = run_sync(["invoices"], instance=instance)
        messages = [r.user_message for r in instance.all_logs(result.run_id)]
    progress = [m for m in messages if m.startswith("invoices: page ")]
    assert progress and "records/s" in progress[-1] and " of " in progress[-1]


def test_progress_of_many_listings_counts_listings_not_pages() -> None:
    stats = ListingStats("/customers/{id}/contacts", pages=3764, records=5201, total_count=5201)
    line = listings._progress_line("contacts", stats, 100, 10.0, listings=(2600, 5000))
    assert line == (
        "contacts: 5201 records in 3764 pages, 2600 of 5000 listings started (520 records/s)"
    )


def test_one_failed_object_keeps_its_table_and_the_rest_are_written(
    account: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_sync().success
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path), read_only=True) as connection:
        before = connection.execute("select count(*) from invoiced.credit_notes").fetchall()
    account.mutate("credit_notes", delete=10)
    account.mutate("customers", insert=5)
    broken = dataclasses.replace(catalogue.CREDIT_NOTES, endpoint="/credit_notes_gone")
    objects = {**catalogue.OBJECTS_BY_NAME, "credit_notes": broken}
    monkeypatch.setattr(catalogue, "OBJECTS_BY_NAME", MappingProxyType(objects))
    result = run_sync()
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "credit_notes" in message and "HTTP 404" in message and "last good copy" in message
    with duckdb.connect(str(path), read_only=True) as connection:
        assert connection.execute("select count(*) from invoiced.credit_notes").fetchall() == before
        customers = connection.execute("select count(*) from invoiced.customers").fetchall()
    assert customers == [(account.truth()["customers"],)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    response = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30)
    response.raise_for_status()
    return response.json()["data"]


def test_the_ui_shows_everything(account: EmulatorServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    port = free_port()
    # The instance's storage is made before the webserver reads it; a sync then runs on it, in
    # process (`test_sync_job` runs `dagster job execute`), while the webserver starts.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "-m", "invoiced_assets",
             "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert run_sync(instance=instance).success
            assert_the_ui_shows_everything(port, server)
        finally:
            server.terminate()
            server.wait(timeout=30)


def assert_the_ui_shows_everything(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2)
            break
        except requests.ConnectionError:
            assert server.poll() is None, "the webserver exited"
            assert time.monotonic() < deadline, "the webserver did not start"
            time.sleep(0.3)
    data = graphql(
        port,
        "{ assetNodes { assetKey { path } groupName"
        " assetChecksOrError { ... on AssetChecks { checks { name } } } }"
        " repositoriesOrError { ... on RepositoryConnection { nodes {"
        " jobs { name } schedules { name scheduleState { status } } } } } }",
    )
    nodes = {tuple(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert ("invoiced", "invoice_line_items") in nodes and len(nodes) == 28
    groups = {n["groupName"] for n in nodes.values()}
    assert groups == {"billing", "catalog", "collections", "customers", "activity"}
    check_names = {
        c["name"] for c in nodes[("invoiced", "invoices")]["assetChecksOrError"]["checks"]
    }
    assert {"primary_key_unique_not_null", "row_count_matches_api"} <= check_names
    (repository,) = data["repositoriesOrError"]["nodes"]
    assert "invoiced_sync" in {j["name"] for j in repository["jobs"]}
    (schedule,) = repository["schedules"]
    assert schedule["name"] == "invoiced_sync_schedule"
    assert schedule["scheduleState"]["status"] == "RUNNING"
    asset = graphql(
        port,
        '{ assetOrError(assetKey: {path: ["invoiced", "invoices"]}) { ... on Asset {'
        " assetMaterializations(limit: 1) { metadataEntries { label } } } } }",
    )
    (latest,) = asset["assetOrError"]["assetMaterializations"]
    labels = {entry["label"] for entry in latest["metadataEntries"]}
    assert labels >= EXPECTED_METADATA


def test_step_retries_only_when_something_was_transient() -> None:
    from invoiced_assets.api import ListingStats
    from invoiced_assets.api.errors import InvoicedAPIError, InvoicedNotFoundError
    from invoiced_assets.extract.listings import Extraction, ReadPlan
    from invoiced_assets.sync import failure_for as _failure

    def failed(error: Exception) -> Extraction:
        return Extraction(ReadPlan(catalogue.INVOICES), ListingStats("/invoices"), error=error)

    assert not _failure([failed(InvoicedNotFoundError("gone"))]).allow_retries
    outage = _failure([failed(InvoicedNotFoundError("gone")), failed(InvoicedAPIError("503"))])
    assert outage.allow_retries and "invoices: 503" in (outage.description or "")
