"""Deployment settings read from environment variables, validated in one place.

Everything a user configures without touching code is read here, when the definitions load, so
a wrong value stops `dagster dev` / `dagster job execute` at once with a message naming the
variable and what it accepts, instead of failing some run later. The API key is not read here:
it stays a `dg.EnvVar`, resolved only inside runs, so it never sits in a definition.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from invoiced_assets.api.client import (
    DEFAULT_MAX_IN_FLIGHT,
    ENVIRONMENT_URLS,
    SERVICE_MAX_IN_FLIGHT,
    validate_base_url,
)
from invoiced_assets.api.errors import InvoicedConfigurationError

SCHEMA = "invoiced"  # the DuckDB schema holding every table
DEFAULT_SNOWFLAKE_SCHEMA = "INVOICED"
# DuckDB may use this much memory (INVOICED_DUCKDB_MEMORY_LIMIT); it writes what does not fit to
# the database file, and keeps what it wrote cached up to the limit, so this is also what it
# holds between writes. Its own default, 80 % of the machine's memory, let a write hold its whole
# table: RSS 1.0 GB writing a 1.4 GB table, 0.5 GB at 256MB (1.7x the time, 3.1 s instead of
# 1.8 s for a million rows). At 64MB a full load of every object at scale 5 peaks 170 MB lower
# than at 256MB, and the core objects at 0 ms took no longer (8.4-8.9 s against 9.4 s).
DEFAULT_DUCKDB_MEMORY_LIMIT = "64MB"
DEFAULT_DUCKDB_PATH = Path("data") / "warehouse.duckdb"
DEFAULT_KEY_PREFIX = "invoiced"  # assets are `invoiced/<table>`
# The events sensor polls /events this often (INVOICED_EVENTS_POLL_SECONDS): one request a
# poll while nothing changed. Not more often than every 30 s: the key's 20 requests in flight
# are shared with the syncs and the account's other integrations.
DEFAULT_EVENTS_POLL_SECONDS = 60
MIN_EVENTS_POLL_SECONDS = 30
DESTINATIONS = ("duckdb", "snowflake")
SNOWFLAKE_REQUIRED = ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_DATABASE")
SNOWFLAKE_CREDENTIALS = (
    "SNOWFLAKE_PASSWORD",
    "SNOWFLAKE_PRIVATE_KEY",
    "SNOWFLAKE_PRIVATE_KEY_PATH",
)


class SettingsError(InvoicedConfigurationError):
    """An environment variable has a value this project cannot use."""


Deployment = Literal["local", "dagster_plus", "dagster_plus_branch"]


@dataclass(frozen=True)
class Settings:
    environment: Literal["production", "sandbox"]
    base_url: str | None
    deployment: Deployment
    destination: Literal["duckdb", "snowflake"]
    duckdb_path: Path
    snowflake_schema: str
    sync_frequency_hours: int
    sync_mode: Literal["full", "incremental"] = "full"
    full_reconcile_hours: float = 24.0
    disabled_objects: frozenset[str] = frozenset()
    min_row_ratio: float = 0.5
    step_retries: int = 2
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    step_retry_delay_seconds: float = 60.0
    duckdb_memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT
    history_objects: frozenset[str] = frozenset()
    events_sensor: bool = False
    events_poll_seconds: int = DEFAULT_EVENTS_POLL_SECONDS
    # Set only by the Component (`component.InvoicedComponent`): the standalone project keeps
    # the public names, assets under `invoiced/` and the key in INVOICED_API_KEY.
    key_prefix: tuple[str, ...] = (DEFAULT_KEY_PREFIX,)
    api_key_env: str = "INVOICED_API_KEY"


def detect_deployment(env: Mapping[str, str]) -> Deployment:
    """Where the code runs, from the variables Dagster+ sets in its deployments."""
    if env.get("DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT") == "1":
        return "dagster_plus_branch"
    if env.get("DAGSTER_CLOUD_DEPLOYMENT_NAME"):
        return "dagster_plus"
    return "local"


def snowflake_schema_for(env: Mapping[str, str], deployment: Deployment) -> str:
    """SNOWFLAKE_SCHEMA (default INVOICED); a branch deployment gets a schema of its own.

    A branch deployment's runs must never touch production tables, so its schema is suffixed
    with the pull request (or branch) it was deployed for, e.g. INVOICED_BRANCH_PR_42.
    """
    schema = (env.get("SNOWFLAKE_SCHEMA") or DEFAULT_SNOWFLAKE_SCHEMA).strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", schema):
        raise SettingsError(
            f"SNOWFLAKE_SCHEMA must be a plain identifier (letters, digits, _), got {schema!r}."
        )
    schema = schema.upper()
    if deployment != "dagster_plus_branch":
        return schema
    pull_request = env.get("DAGSTER_CLOUD_PULL_REQUEST_ID", "").strip()
    branch = pull_request and f"PR_{pull_request}"
    branch = (
        branch or env.get("DAGSTER_CLOUD_GIT_BRANCH") or env.get("DAGSTER_CLOUD_DEPLOYMENT_NAME")
    )
    suffix = re.sub(r"[^A-Z0-9]+", "_", (branch or "UNKNOWN").upper()).strip("_")
    return f"{schema}_BRANCH_{suffix}"[:255]


def parse_sync_frequency(raw: str | None) -> int:
    """INVOICED_SYNC_FREQUENCY_HOURS: a whole number of hours from 1 to 24 (default 1)."""
    if raw is None:
        return 1
    text = raw.strip()
    if not re.fullmatch(r"[0-9]+", text) or not 1 <= int(text) <= 24:
        raise SettingsError(
            f"INVOICED_SYNC_FREQUENCY_HOURS must be a whole number of hours from 1 to 24, got"
            f" {raw!r}. Unset it for the default (every hour)."
        )
    return int(text)


def _parse_number(
    env: Mapping[str, str], name: str, default: float, low: float, high: float, *, whole: bool
) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    pattern = r"[0-9]+" if whole else r"[0-9]+(\.[0-9]+)?|\.[0-9]+"
    text = raw.strip()
    if not re.fullmatch(pattern, text) or not low <= float(text) <= high:
        kind = "a whole number" if whole else "a number"
        raise SettingsError(f"{name} must be {kind} from {low:g} to {high:g}, got {raw!r}.")
    return int(text) if whole else float(text)


def parse_sync_mode(raw: str | None) -> Literal["full", "incremental"]:
    """INVOICED_SYNC_MODE: full (default) or incremental."""
    value = (raw or "full").strip().lower()
    if value not in ("full", "incremental"):
        raise SettingsError(
            f"INVOICED_SYNC_MODE must be 'full' (every run replaces every table) or 'incremental'"
            f" (only what changed, with a full reconciliation every"
            f" INVOICED_FULL_RECONCILE_HOURS), got {raw!r}."
        )
    return value  # type: ignore[return-value]


def parse_disabled_objects(raw: str | None) -> frozenset[str]:
    """INVOICED_DISABLED_OBJECTS: comma-separated objects not to replicate (e.g. events,tasks)."""
    from invoiced_assets.catalogue import OBJECTS_BY_NAME

    names = frozenset(n.strip().lower() for n in (raw or "").split(",") if n.strip())
    unknown = sorted(names - set(OBJECTS_BY_NAME))
    if unknown:
        raise SettingsError(
            f"INVOICED_DISABLED_OBJECTS names unknown objects: {', '.join(unknown)}. Known:"
            f" {', '.join(OBJECTS_BY_NAME)}."
        )
    if len(names) == len(OBJECTS_BY_NAME):
        raise SettingsError("INVOICED_DISABLED_OBJECTS disables every object: leave at least one.")
    return names


def parse_switch(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off (any case)."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be on or off (true/false, 1/0), got {raw!r}.")


def parse_history(raw: str | None, disabled: frozenset[str] = frozenset()) -> frozenset[str]:
    """INVOICED_HISTORY: objects whose every version is kept in `<table>_history`, or `all`.

    `all` is every replicated object that can change (events are append-only: never changed)."""
    from invoiced_assets.catalogue import CATALOGUE, OBJECTS_BY_NAME

    names = frozenset(n.strip().lower() for n in (raw or "").split(",") if n.strip())
    if names == {"all"}:
        return frozenset(o.name for o in CATALOGUE if not o.append_only and o.name not in disabled)
    unknown = sorted(names - set(OBJECTS_BY_NAME))
    if unknown:
        raise SettingsError(
            f"INVOICED_HISTORY names unknown objects: {', '.join(unknown)}. Give `all`, or some"
            f" of: {', '.join(o.name for o in CATALOGUE if not o.append_only)}."
        )
    unchanging = sorted(n for n in names if OBJECTS_BY_NAME[n].append_only)
    if unchanging:
        raise SettingsError(
            f"INVOICED_HISTORY names {', '.join(unchanging)}: append-only, its records never"
            " change, so it has no history to keep. Leave it out."
        )
    off = sorted(names & disabled)
    if off:
        raise SettingsError(
            f"INVOICED_HISTORY names {', '.join(off)}, which INVOICED_DISABLED_OBJECTS switches"
            " off: history needs the table. Leave it out of one of them."
        )
    return names


def parse_environment(raw: str | None) -> Literal["production", "sandbox"]:
    value = (raw or "production").strip().lower()
    if value not in ENVIRONMENT_URLS:
        raise SettingsError(f"INVOICED_ENVIRONMENT must be 'production' or 'sandbox', got {raw!r}.")
    return value  # type: ignore[return-value]


def parse_duckdb_path(raw: str | None, schema: str = SCHEMA) -> Path:
    """INVOICED_DUCKDB_PATH, refusing a file whose name would shadow the schema.

    DuckDB names a database after its file: `invoiced.duckdb` holding schema `invoiced` makes
    `select * from invoiced.invoices` fail as ambiguous between catalog and schema.
    """
    path = Path(raw.strip()) if raw and raw.strip() else DEFAULT_DUCKDB_PATH
    if path.stem.lower() == schema.lower():
        raise SettingsError(
            f"INVOICED_DUCKDB_PATH names the file {path.name!r}: DuckDB would call the database"
            f" {path.stem!r}, the same as the schema {schema!r}, and `{schema}.invoices` would be"
            f" ambiguous. Choose another file name, e.g. {path.with_stem('warehouse')}."
        )
    if path.exists() and path.is_dir():
        raise SettingsError(f"INVOICED_DUCKDB_PATH is a directory ({path}); give a file path.")
    return path


def parse_memory_limit(raw: str | None, default: str = DEFAULT_DUCKDB_MEMORY_LIMIT) -> str:
    """INVOICED_DUCKDB_MEMORY_LIMIT: DuckDB's memory for writing, e.g. 256MB or 2GB."""
    value = (raw or default).strip().replace(" ", "")
    if not re.fullmatch(r"(?i)\d+(\.\d+)?(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value):
        raise SettingsError(
            "INVOICED_DUCKDB_MEMORY_LIMIT must be an amount with a unit, e.g. 256MB or 2GB,"
            f" got {raw!r}."
        )
    return value


def parse_destination(
    raw: str | None, env: Mapping[str, str], deployment: Deployment = "local"
) -> Literal["duckdb", "snowflake"]:
    """INVOICED_DESTINATION, defaulting by deployment: DuckDB locally, Snowflake on Dagster+."""
    default = "duckdb" if deployment == "local" else "snowflake"
    value = (raw or default).strip().lower()
    if value not in DESTINATIONS:
        raise SettingsError(
            f"INVOICED_DESTINATION must be one of {', '.join(DESTINATIONS)}, got {raw!r}."
        )
    if value == "snowflake":
        missing = [name for name in SNOWFLAKE_REQUIRED if not env.get(name)]
        if not any(env.get(name) for name in SNOWFLAKE_CREDENTIALS):
            missing.append(" or ".join(SNOWFLAKE_CREDENTIALS))
        if missing:
            raise SettingsError(
                "The Snowflake destination needs these environment variables, which are"
                f" not set: {', '.join(missing)}."
            )
    return value  # type: ignore[return-value]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise `SettingsError` naming the variable at fault."""
    env = os.environ if env is None else env
    base_url = env.get("INVOICED_BASE_URL", "").strip() or None
    if base_url:
        try:
            base_url = validate_base_url(base_url)
        except InvoicedConfigurationError as exc:
            raise SettingsError(str(exc)) from None
    deployment = detect_deployment(env)
    return Settings(
        environment=parse_environment(env.get("INVOICED_ENVIRONMENT")),
        base_url=base_url,
        deployment=deployment,
        destination=parse_destination(env.get("INVOICED_DESTINATION"), env, deployment),
        duckdb_path=parse_duckdb_path(env.get("INVOICED_DUCKDB_PATH")),
        snowflake_schema=snowflake_schema_for(env, deployment),
        sync_frequency_hours=parse_sync_frequency(env.get("INVOICED_SYNC_FREQUENCY_HOURS")),
        sync_mode=parse_sync_mode(env.get("INVOICED_SYNC_MODE")),
        full_reconcile_hours=_parse_number(
            env, "INVOICED_FULL_RECONCILE_HOURS", 24, 1, 24 * 365, whole=False
        ),
        disabled_objects=(disabled := parse_disabled_objects(env.get("INVOICED_DISABLED_OBJECTS"))),
        history_objects=parse_history(env.get("INVOICED_HISTORY"), disabled),
        min_row_ratio=_parse_number(env, "INVOICED_MIN_ROW_RATIO", 0.5, 0, 1, whole=False),
        step_retries=int(_parse_number(env, "INVOICED_STEP_RETRIES", 2, 0, 10, whole=True)),
        max_in_flight=int(
            _parse_number(
                env,
                "INVOICED_MAX_IN_FLIGHT",
                DEFAULT_MAX_IN_FLIGHT,
                1,
                SERVICE_MAX_IN_FLIGHT,
                whole=True,
            )
        ),
        step_retry_delay_seconds=_parse_number(
            env, "INVOICED_STEP_RETRY_DELAY_SECONDS", 60, 0, 3600, whole=False
        ),
        duckdb_memory_limit=parse_memory_limit(env.get("INVOICED_DUCKDB_MEMORY_LIMIT")),
        events_sensor=parse_switch(env, "INVOICED_EVENTS_SENSOR"),
        events_poll_seconds=int(
            _parse_number(
                env,
                "INVOICED_EVENTS_POLL_SECONDS",
                DEFAULT_EVENTS_POLL_SECONDS,
                MIN_EVENTS_POLL_SECONDS,
                24 * 3600,
                whole=True,
            )
        ),
    )
