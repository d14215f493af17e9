"""A run chooses its mode: run config `sync_mode` overrides INVOICED_SYNC_MODE for that run only,
and `invoiced_full_reload` is a full load whatever the deployment's mode.

Against the emulator, with the instance keeping the cursors between runs: the materializations'
`invoiced/sync_kind` says how each table was read.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from invoiced_assets.component import build_definitions
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.extract.incremental import SYNC_KIND
from invoiced_assets.schedules import run_config_for
from invoiced_assets.settings import load_settings
from invoiced_assets.sync.options import SyncMode

from .conftest import API_KEY, use_emulator

OBJECTS = "customers,invoices"
TABLES = {"customers", "invoices", "invoice_line_items", "invoice_discounts", "invoice_taxes"}


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.2, seed=71, api_key=API_KEY) as server:
        use_emulator(monkeypatch, server, tmp_path / "warehouse.duckdb")
        yield server


def run(
    instance: dg.DagsterInstance, mode: str, job: str = "invoiced_sync", **config: str
) -> dict[str, str]:
    """Run `job` of definitions in `mode`; each table's sync kind."""
    from invoiced_assets.catalogue import OBJECTS_BY_NAME

    disabled = ",".join(n for n in OBJECTS_BY_NAME if n not in OBJECTS.split(","))
    settings = load_settings(
        {**_environ(), "INVOICED_SYNC_MODE": mode, "INVOICED_DISABLED_OBJECTS": disabled}
    )
    definition = build_definitions(settings).resolve_job_def(job)
    run_config = {"ops": {"invoiced_tables": {"config": config}}} if config else None
    result = definition.execute_in_process(instance=instance, run_config=run_config)
    assert result.success
    return {
        m.asset_key.path[-1]: m.metadata[SYNC_KIND].value
        for m in result.asset_materializations_for_node("invoiced_tables")
    }


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_run_config_overrides_the_deployments_mode_for_one_run(
    account: EmulatorServer, instance: dg.DagsterInstance
) -> None:
    assert set(run(instance, "full").values()) == {"full"}
    # Full definitions, one incremental run: it continues from the cursors.
    kinds = run(instance, "full", sync_mode="incremental")
    assert set(kinds) == TABLES and set(kinds.values()) == {"incremental"}
    # The next run without config is the deployment's mode again.
    assert set(run(instance, "full").values()) == {"full"}
    # Incremental definitions, one full run.
    assert set(run(instance, "incremental", sync_mode="full").values()) == {"full"}
    assert set(run(instance, "incremental").values()) == {"incremental"}


def test_the_full_reload_job_is_full_whatever_the_deployment_says(
    account: EmulatorServer, instance: dg.DagsterInstance
) -> None:
    run(instance, "incremental")
    assert set(run(instance, "incremental").values()) == {"incremental"}
    assert set(run(instance, "incremental", job="invoiced_full_reload").values()) == {"full"}


def test_the_jobs_default_config_is_what_the_launchpad_shows() -> None:
    defs = build_definitions(load_settings({}))
    sync = defs.resolve_job_def("invoiced_sync")
    reload = defs.resolve_job_def("invoiced_full_reload")
    assert run_config_for(None) == {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    assert run_config_for(SyncMode.full)["ops"] == {
        "invoiced_tables": {"config": {"sync_mode": "full"}}
    }
    assert "INVOICED_SYNC_MODE" in (sync.description or "")
    assert "full reload" in (reload.description or "")
    with pytest.raises(dg.DagsterInvalidConfigError, match="sync_mode"):
        sync.execute_in_process(
            run_config={"ops": {"invoiced_tables": {"config": {"sync_mode": "sometimes"}}}}
        )
