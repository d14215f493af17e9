"""Shared fixtures: a local Invoiced emulator on 127.0.0.1 and clients with tiny waits."""

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import dagster as dg
import pytest

from invoiced_assets.api import InvoicedClient, InvoicedResource
from invoiced_assets.emulator import EmulatorServer, FaultConfig

API_KEY = "test-key-0123456789abcdef"
T = TypeVar("T")


# Where tests' temporary folders go (`tmp_path`): a RAM-backed folder where the machine has one,
# unless PYTEST_DEBUG_TEMPROOT (pytest's own setting) or --basetemp says otherwise. Each event a
# run logs is a committed SQLite transaction, and each DuckDB load a checkpoint: on disk, their
# fsyncs cost a sync of a few hundred events seconds; in RAM, nothing. Same files, same storage.
RAM_FOLDER = Path("/dev/shm")


def pytest_configure(config: pytest.Config) -> None:
    if RAM_FOLDER.is_dir() and os.access(RAM_FOLDER, os.W_OK | os.X_OK):
        os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(RAM_FOLDER))


def fast_resource(base_url: str, **overrides: object) -> InvoicedResource:
    """A resource whose retries wait milliseconds, not seconds."""
    settings: dict[str, object] = {
        "api_key": API_KEY,
        "base_url": base_url,
        "max_retries": 8,
        "backoff_initial_seconds": 0.001,
        "backoff_max_seconds": 0.01,
        "connect_timeout_seconds": 2,
        "read_timeout_seconds": 5,
    }
    settings.update(overrides)
    return InvoicedResource(**settings)  # type: ignore[arg-type]


def fast_client(base_url: str, **overrides: object) -> InvoicedClient:
    return fast_resource(base_url, **overrides).get_client()


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    """A small account (scale 0.2) shared by a module's tests that do not change its data or
    faults. Stopped at the module's end."""
    with EmulatorServer(scale=0.2, seed=7, api_key=API_KEY) as server:
        yield server


@pytest.fixture
def fresh_emulator() -> Iterator[EmulatorServer]:
    """A small account of the test's own, free to mutate and to inject faults into."""
    with EmulatorServer(scale=0.2, seed=11, api_key=API_KEY, faults=FaultConfig()) as server:
        yield server


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A Dagster instance of the test's own, in memory: cursors and row counts survive from one
    run to the next. Its event log is Dagster's SQL event storage on an in-memory SQLite
    database, the same queries as the on-disk one without a new engine and a commit per event
    (about 8 ms each, most of a sync's time in tests). The CLI, `dagster dev`, pool and
    schedule tests use on-disk SQLite instances of their own."""
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture(autouse=True)
def instant_step_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Step retries (INVOICED_STEP_RETRIES) keep their count but wait no time in tests."""
    monkeypatch.setenv("INVOICED_STEP_RETRY_DELAY_SECONDS", "0")


class HasUrl(Protocol):
    """An emulator: `EmulatorServer`, or anything serving its API at `url`."""

    url: str


def use_emulator(
    monkeypatch: pytest.MonkeyPatch,
    server: HasUrl,
    database: Path | None = None,
    **variables: str,
) -> None:
    """Point the project's settings (environment variables) at `server` and a DuckDB file."""
    monkeypatch.setenv("INVOICED_API_KEY", API_KEY)
    monkeypatch.setenv("INVOICED_BASE_URL", server.url)
    if database is not None:
        monkeypatch.setenv("INVOICED_DUCKDB_PATH", str(database))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def hold_answers(
    monkeypatch: pytest.MonkeyPatch, server: EmulatorServer
) -> tuple[threading.Event, threading.Event]:
    """Make the in-process emulator hold every request, in flight, until the test releases it:
    `(arrived, release)`. Tests then wait on events rather than on the clock."""
    arrived, release = threading.Event(), threading.Event()
    route = server._route

    def held(*args: Any) -> Any:
        arrived.set()
        release.wait(30)
        return route(*args)

    monkeypatch.setattr(server, "_route", held)
    return arrived, release


def execute_checks_alone(
    defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]
) -> dg.ExecuteInProcessResult:
    """What the UI's "Execute" on checks runs: the checks alone, no table materialized."""
    return dg.materialize(
        list(defs.assets or []),
        resources=defs.resources,
        selection=dg.AssetSelection.checks(*keys),
        instance=instance,
        raise_on_error=False,
    )


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 120, interval: float = 0.1
) -> T:
    """Poll `probe` until it returns something other than None or False (a thread or process
    reaching a state); fail after `timeout`, generous: only reached when something is wrong."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)
