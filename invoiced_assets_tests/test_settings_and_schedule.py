"""Settings from environment variables fail loudly and clearly; the schedule follows them.

The schedule keeps its name, cron, time zone and default status whatever the frequency; when it
skips a tick (a sync still in progress) is proved in test_no_overlap.
"""

from pathlib import Path

import dagster as dg
import pytest

from invoiced_assets.schedules import (
    SCHEDULE_NAME,
    build_sync_job,
    build_sync_schedule,
    cron_for_frequency,
)
from invoiced_assets.settings import (
    DEFAULT_DUCKDB_PATH,
    SettingsError,
    load_settings,
    parse_duckdb_path,
    parse_sync_frequency,
)


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.environment == "production"
    assert settings.base_url is None
    assert settings.destination == "duckdb"
    assert settings.duckdb_path == DEFAULT_DUCKDB_PATH
    assert settings.sync_frequency_hours == 1


@pytest.mark.parametrize("raw, hours", [("1", 1), ("6", 6), (" 24 ", 24), ("07", 7)])
def test_frequency_accepts_whole_hours(raw: str, hours: int) -> None:
    assert parse_sync_frequency(raw) == hours


@pytest.mark.parametrize("raw", ["0", "25", "1.5", "two", "", "-1", "1e1"])
def test_frequency_rejects_anything_else(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"INVOICED_SYNC_FREQUENCY_HOURS.*1 to 24"):
        load_settings({"INVOICED_SYNC_FREQUENCY_HOURS": raw})


@pytest.mark.parametrize(
    "hours, cron", [(1, "0 * * * *"), (2, "0 */2 * * *"), (5, "0 */5 * * *"), (24, "0 0 * * *")]
)
def test_cron_matches_frequency(hours: int, cron: str) -> None:
    assert cron_for_frequency(hours) == cron


@pytest.mark.parametrize("hours", [1, 6, 24])
def test_the_schedule_keeps_its_name_cron_time_zone_and_status(hours: int) -> None:
    schedule = build_sync_schedule(build_sync_job(["invoiced"]), hours, ["invoiced"])
    assert schedule.name == SCHEDULE_NAME == "invoiced_sync_schedule"
    assert schedule.cron_schedule == cron_for_frequency(hours)
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "invoiced_sync"


@pytest.mark.parametrize("name", ["invoiced.duckdb", "INVOICED.db", "data/invoiced.duckdb"])
def test_duckdb_file_named_like_the_schema_is_refused(name: str) -> None:
    with pytest.raises(SettingsError, match="ambiguous"):
        parse_duckdb_path(name)


def test_duckdb_path_override() -> None:
    assert parse_duckdb_path("/tmp/x/billing.duckdb") == Path("/tmp/x/billing.duckdb")


def test_environment_and_destination_are_checked() -> None:
    assert load_settings({"INVOICED_ENVIRONMENT": "Sandbox"}).environment == "sandbox"
    with pytest.raises(SettingsError, match="INVOICED_ENVIRONMENT"):
        load_settings({"INVOICED_ENVIRONMENT": "staging"})
    with pytest.raises(SettingsError, match="INVOICED_DESTINATION"):
        load_settings({"INVOICED_DESTINATION": "bigquery"})


def test_snowflake_names_every_missing_variable() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"INVOICED_DESTINATION": "snowflake", "SNOWFLAKE_USER": "me"})
    message = str(raised.value)
    assert "SNOWFLAKE_ACCOUNT" in message and "SNOWFLAKE_DATABASE" in message
    assert "SNOWFLAKE_PASSWORD" in message and "SNOWFLAKE_USER" not in message.split(":")[-1]


@pytest.mark.parametrize(
    "url", ["http://api.example.com", "ftp://127.0.0.1", "api.invoiced.com", "https://k@x.com"]
)
def test_base_url_must_be_https_unless_loopback(url: str) -> None:
    with pytest.raises(SettingsError, match="INVOICED_BASE_URL"):
        load_settings({"INVOICED_BASE_URL": url})


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8765/", "http://localhost:1", "http://[::1]:9", "https://p.example"]
)
def test_base_url_accepted(url: str) -> None:
    assert load_settings({"INVOICED_BASE_URL": url}).base_url == url.rstrip("/")


SNOWFLAKE = {
    "SNOWFLAKE_ACCOUNT": "acme-xy12345",
    "SNOWFLAKE_USER": "dagster",
    "SNOWFLAKE_PASSWORD": "pw",
    "SNOWFLAKE_DATABASE": "ANALYTICS",
}


def test_the_destination_follows_the_deployment() -> None:
    local = load_settings({})
    assert (local.deployment, local.destination) == ("local", "duckdb")
    production = load_settings({"DAGSTER_CLOUD_DEPLOYMENT_NAME": "prod", **SNOWFLAKE})
    assert (production.deployment, production.destination) == ("dagster_plus", "snowflake")
    assert production.snowflake_schema == "INVOICED"
    branch = load_settings(
        {
            "DAGSTER_CLOUD_DEPLOYMENT_NAME": "feature-x",
            "DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT": "1",
            "DAGSTER_CLOUD_PULL_REQUEST_ID": "42",
            "SNOWFLAKE_SCHEMA": "billing",
            **SNOWFLAKE,
        }
    )
    assert (branch.deployment, branch.destination) == ("dagster_plus_branch", "snowflake")
    assert branch.snowflake_schema == "BILLING_BRANCH_PR_42"
    no_pr = load_settings(
        {
            "DAGSTER_CLOUD_DEPLOYMENT_NAME": "x",
            "DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT": "1",
            "DAGSTER_CLOUD_GIT_BRANCH": "feature/new-tables",
            **SNOWFLAKE,
        }
    )
    assert no_pr.snowflake_schema == "INVOICED_BRANCH_FEATURE_NEW_TABLES"


def test_dagster_plus_without_snowflake_settings_fails_clearly() -> None:
    with pytest.raises(SettingsError, match="SNOWFLAKE_ACCOUNT"):
        load_settings({"DAGSTER_CLOUD_DEPLOYMENT_NAME": "prod"})


def test_snowflake_schema_must_be_an_identifier() -> None:
    with pytest.raises(SettingsError, match="SNOWFLAKE_SCHEMA"):
        load_settings({"SNOWFLAKE_SCHEMA": "bad-schema; drop", **SNOWFLAKE})


def test_requests_in_flight_are_capped_by_the_service_limit() -> None:
    assert load_settings({}).max_in_flight == 16
    assert load_settings({"INVOICED_MAX_IN_FLIGHT": "8"}).max_in_flight == 8
    for raw in ("0", "21", "many"):
        with pytest.raises(SettingsError, match=r"INVOICED_MAX_IN_FLIGHT.*1 to 20"):
            load_settings({"INVOICED_MAX_IN_FLIGHT": raw})


def test_duckdb_memory_limit_is_an_amount_every_connection_shares() -> None:
    from invoiced_assets.destinations import build_io_manager

    assert load_settings({}).duckdb_memory_limit == "64MB"
    settings = load_settings({"INVOICED_DUCKDB_MEMORY_LIMIT": " 2 GB "})
    assert settings.duckdb_memory_limit == "2GB"
    # DuckDB refuses a second connection to an open file with another configuration.
    assert build_io_manager(settings).memory_limit == "2GB"
    for raw in ("lots", "256", "-1GB", "1 PB"):
        with pytest.raises(SettingsError, match=r"INVOICED_DUCKDB_MEMORY_LIMIT.*256MB"):
            load_settings({"INVOICED_DUCKDB_MEMORY_LIMIT": raw})
