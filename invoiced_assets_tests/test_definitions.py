"""The definitions load as users load them: assets, job, schedule, resources, clear errors.

This is the test that keeps the suite from rotting: it builds the real `defs`.
"""

import os
import subprocess
import sys
import warnings
from datetime import timedelta

import dagster as dg
import pytest

from invoiced_assets.api import InvoicedResource
from invoiced_assets.assets import IO_MANAGER_KEY, table_assets
from invoiced_assets.catalogue import CATALOGUE
from invoiced_assets.component import build_definitions
from invoiced_assets.destinations.duckdb_destination import InvoicedDuckDBIOManager
from invoiced_assets.destinations.snowflake_destination import InvoicedSnowflakeIOManager
from invoiced_assets.settings import SettingsError, load_settings

EXPECTED_TABLES = {
    "customers", "invoices", "payments", "subscriptions", "credit_notes", "estimates",
    "credit_balance_adjustments", "invoice_line_items", "invoice_discounts", "invoice_taxes",
    "credit_note_line_items", "credit_note_discounts", "credit_note_taxes",
    "estimate_line_items", "estimate_discounts", "estimate_taxes", "payment_applications",
    "subscription_addons", "plans", "plan_tiers", "items", "coupons", "tax_rates", "notes",
    "tasks", "contacts", "payment_sources", "events",
}  # fmt: skip
GROUPS = {
    "customers": {"customers", "contacts", "payment_sources"},
    "catalog": {"plans", "plan_tiers", "items", "coupons", "tax_rates"},
    "collections": {"notes", "tasks"},
    "activity": {"events"},
}


def test_module_defs_load() -> None:
    import invoiced_assets
    import invoiced_assets.definitions

    dg.Definitions.validate_loadable(invoiced_assets.definitions.defs)
    # What `dagster job execute -m invoiced_assets` finds: the definitions, built on demand.
    assert invoiced_assets.defs() is invoiced_assets.definitions.defs
    assert set(dir(invoiced_assets)) == {"InvoicedComponent", "defs"}


def test_looking_for_components_does_not_build_this_projects_definitions() -> None:
    # What `dg list components` does with a registry module: every name in dir(), fetched.
    code = (
        "import sys, invoiced_assets as m\n"
        "found = {n: getattr(m, n) for n in dir(m)}\n"
        "print(sorted(found), 'invoiced_assets.definitions' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["['InvoicedComponent',", "'defs']", "False"]


def test_assets_job_and_schedule() -> None:
    defs = build_definitions(load_settings({"INVOICED_SYNC_FREQUENCY_HOURS": "6"}))
    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    assert {key.path[-1] for key in specs} == EXPECTED_TABLES
    for key, spec in specs.items():
        assert key.path[0] == "invoiced" and len(key.path) == 2
        expected_group = next((g for g, t in GROUPS.items() if key.path[-1] in t), "billing")
        assert spec.group_name == expected_group
        assert {"invoiced", "duckdb"} <= set(spec.kinds)
        assert spec.description and spec.metadata["primary_key"]
        # Stale when a 6-hourly sync is an hour late, failed when two in a row were missed.
        assert spec.freshness_policy is not None
        assert spec.freshness_policy.warn_window.seconds == timedelta(hours=7).seconds
        assert spec.freshness_policy.fail_window.seconds == timedelta(hours=13).seconds
    assert specs[dg.AssetKey(["invoiced", "invoices"])].metadata["primary_key"] == "id"
    job = defs.resolve_job_def("invoiced_sync")
    assert set(job.asset_layer.selected_asset_keys) == set(specs)
    schedule = defs.resolve_schedule_def("invoiced_sync_schedule")
    assert schedule.cron_schedule == "0 */6 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "invoiced_sync"
    assert IO_MANAGER_KEY in defs.resources and "invoiced" in defs.resources


def test_catalogue_drives_the_assets() -> None:
    names = [t.table for t in table_assets(CATALOGUE)]
    assert len(names) == len(set(names)) == len(EXPECTED_TABLES)
    assert [t.table for t in table_assets(CATALOGUE[:1])] == ["customers"]


def test_objects_can_be_switched_off() -> None:
    defs = build_definitions(load_settings({"INVOICED_DISABLED_OBJECTS": "events, tasks,plans"}))
    tables = {spec.key.path[-1] for spec in defs.resolve_all_asset_specs()}
    assert tables == EXPECTED_TABLES - {"events", "tasks", "plans", "plan_tiers"}
    with pytest.raises(SettingsError, match=r"INVOICED_DISABLED_OBJECTS.*refunds"):
        load_settings({"INVOICED_DISABLED_OBJECTS": "refunds"})


def test_no_deprecation_warnings_from_our_code() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_definitions(load_settings({}))
    ours = [w for w in caught if "invoiced_assets" in (w.filename or "")]
    assert not ours, [str(w.message) for w in ours]


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("INVOICED_SYNC_FREQUENCY_HOURS", "25", "INVOICED_SYNC_FREQUENCY_HOURS must be a whole"),
        ("INVOICED_SYNC_FREQUENCY_HOURS", "two", "from 1 to 24"),
        ("INVOICED_DUCKDB_PATH", "data/invoiced.duckdb", "ambiguous"),
        ("INVOICED_DESTINATION", "snowflake", "SNOWFLAKE_ACCOUNT"),
    ],
)
def test_bad_settings_fail_loading_the_definitions(
    variable: str, value: str, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVOICED_", "SNOWFLAKE_"))}
    env[variable] = value
    done = subprocess.run(
        [sys.executable, "-c", "import invoiced_assets; invoiced_assets.defs()"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert expected in done.stderr


SNOWFLAKE_ENV = {
    "SNOWFLAKE_ACCOUNT": "acme-xy12345",
    "SNOWFLAKE_USER": "dagster",
    "SNOWFLAKE_PASSWORD": "secret-password-123",
    "SNOWFLAKE_DATABASE": "ANALYTICS",
}


@pytest.mark.parametrize(
    "env, destination, schema",
    [
        ({}, "duckdb", "invoiced"),
        ({"INVOICED_DESTINATION": "snowflake", **SNOWFLAKE_ENV}, "snowflake", "INVOICED"),
        ({"DAGSTER_CLOUD_DEPLOYMENT_NAME": "prod", **SNOWFLAKE_ENV}, "snowflake", "INVOICED"),
        (
            {
                "DAGSTER_CLOUD_DEPLOYMENT_NAME": "my-branch",
                "DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT": "1",
                "DAGSTER_CLOUD_PULL_REQUEST_ID": "7",
                **SNOWFLAKE_ENV,
            },
            "snowflake",
            "INVOICED_BRANCH_PR_7",
        ),
    ],
    ids=["local", "local-snowflake", "dagster-plus", "dagster-plus-branch"],
)
def test_definitions_per_deployment(
    env: dict[str, str], destination: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # EnvVar-backed settings are read from the environment
    defs = build_definitions(load_settings(env))
    dg.Definitions.validate_loadable(defs)
    io_manager = defs.resources[IO_MANAGER_KEY]
    expected = InvoicedSnowflakeIOManager if destination == "snowflake" else InvoicedDuckDBIOManager
    assert type(io_manager) is expected
    assert io_manager.schema_name == schema
    spec = next(iter(defs.resolve_all_asset_specs()))
    assert destination in spec.kinds
    assert "secret-password-123" not in repr(io_manager)
    assert isinstance(defs.resources["invoiced"], InvoicedResource)
    assert defs.resources["invoiced"].max_in_flight == 16
