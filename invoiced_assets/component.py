"""`InvoicedComponent`: the whole replication as a Dagster Component, and the one function that
builds its definitions (`build_definitions`), for a user's `dg` project and for this project.

In a `dg` project, `dg scaffold defs invoiced_assets.InvoicedComponent invoiced` writes
`defs/invoiced/defs.yaml`; its attributes are the settings of the README, named as fields. An
attribute left out falls back to its environment variable, then to its default, exactly as in
the standalone project (which builds `build_definitions(load_settings())`).
"""

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import Field, field_validator

from invoiced_assets.api import InvoicedResource
from invoiced_assets.assets import IO_MANAGER_KEY, build_invoiced_assets, table_assets
from invoiced_assets.catalogue import CATALOGUE, OBJECTS_BY_NAME
from invoiced_assets.destinations import build_io_manager
from invoiced_assets.schedules import build_sync_job, build_sync_schedule
from invoiced_assets.sensors import build_events_sensor
from invoiced_assets.settings import (
    DEFAULT_KEY_PREFIX,
    MIN_EVENTS_POLL_SECONDS,
    Settings,
    SettingsError,
    load_settings,
)
from invoiced_assets.sync import SyncOptions

API_KEY_VARIABLE = "INVOICED_API_KEY"


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every definition of a replication: assets and checks, jobs, schedule, sensor, resources."""
    enabled = [obj for obj in CATALOGUE if obj.name not in settings.disabled_objects]
    prefix = settings.key_prefix
    sync_job = build_sync_job(prefix)
    return dg.Definitions(
        assets=[
            build_invoiced_assets(
                enabled,
                destination=settings.destination,
                frequency_hours=settings.sync_frequency_hours,
                options=SyncOptions(
                    incremental=settings.sync_mode == "incremental",
                    full_reconcile_hours=settings.full_reconcile_hours,
                    min_row_ratio=settings.min_row_ratio,
                    history=settings.history_objects,
                ),
                # None when retries are off: the step's failure is then the error itself, not
                # Dagster's "Exceeded max_retries of 0" wrapped around it.
                retry_policy=dg.RetryPolicy(
                    max_retries=settings.step_retries,
                    delay=settings.step_retry_delay_seconds,
                    backoff=dg.Backoff.EXPONENTIAL,
                    jitter=dg.Jitter.PLUS_MINUS,
                )
                if settings.step_retries
                else None,
                key_prefix=prefix,
            )
        ],
        jobs=[sync_job, build_sync_job(prefix, full_reload=True)],
        schedules=[build_sync_schedule(sync_job, settings.sync_frequency_hours, prefix)],
        sensors=[
            build_events_sensor(
                sync_job,
                table_assets(enabled, prefix),
                poll_seconds=settings.events_poll_seconds,
                running=settings.events_sensor,
                key_prefix=prefix,
            )
        ],
        resources={
            "invoiced": InvoicedResource(
                api_key=dg.EnvVar(settings.api_key_env),
                environment=settings.environment,
                base_url=settings.base_url,
                max_in_flight=settings.max_in_flight,
            ),
            IO_MANAGER_KEY: build_io_manager(settings),
        },
    )


_ENV_TEMPLATE = re.compile(
    r"""\s*\{\{\s*env(?:\.(?P<attr>\w+)|\(\s*['"](?P<call>\w+)['"]\s*\))\s*\}\}\s*"""
)


def api_key_variable(raw: Any) -> dg.EnvVar:
    """The environment variable `api_key` names, kept unresolved: the key itself is read only
    inside runs, so it never sits in a definition, the UI or a committed file."""
    if isinstance(raw, dg.EnvVar):
        return raw
    match = _ENV_TEMPLATE.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise SettingsError(
            "api_key must name the environment variable holding the key, e.g."
            f' `api_key: "{{{{ env.{API_KEY_VARIABLE} }}}}"` in defs.yaml (or'
            f" `dg.EnvVar('{API_KEY_VARIABLE}')` in Python), not the key itself: a key written"
            " there would be committed with the project and shown in the UI."
        )
    return dg.EnvVar(match.group("attr") or match.group("call"))


def _resolve_api_key(context: dg.ResolutionContext, raw: Any) -> dg.EnvVar:
    return api_key_variable(raw)


# Component attribute -> the environment variable it stands for (its value overrides it).
ENVIRONMENT_FOR_ATTRIBUTE: Mapping[str, str] = {
    "environment": "INVOICED_ENVIRONMENT",
    "base_url": "INVOICED_BASE_URL",
    "destination": "INVOICED_DESTINATION",
    "duckdb_path": "INVOICED_DUCKDB_PATH",
    "snowflake_schema": "SNOWFLAKE_SCHEMA",
    "sync_frequency_hours": "INVOICED_SYNC_FREQUENCY_HOURS",
    "sync_mode": "INVOICED_SYNC_MODE",
    "history": "INVOICED_HISTORY",
    "events_sensor": "INVOICED_EVENTS_SENSOR",
    "events_poll_seconds": "INVOICED_EVENTS_POLL_SECONDS",
}


class InvoicedComponent(dg.Component, dg.Model, dg.Resolvable):
    """Replicates an Invoiced account into DuckDB or Snowflake: one asset per table, with
    checks, the `invoiced_sync` job, its schedule and the events sensor.

    Attributes left out fall back to their environment variables (README, "Settings").
    """

    api_key: Annotated[
        str,
        dg.Resolver(
            _resolve_api_key,
            model_field_type=str,
            inject_before_resolve=False,
            description=(
                'The environment variable holding the API key: "{{ env.INVOICED_API_KEY }}".'
                " Read only inside runs; never the key itself."
            ),
        ),
    ] = Field(default=API_KEY_VARIABLE)  # once loaded: the variable's name
    environment: Literal["production", "sandbox"] | None = Field(
        default=None, description="production (api.invoiced.com) or sandbox."
    )
    base_url: str | None = Field(
        default=None, description="Overrides the environment's URL (an emulator, a proxy)."
    )
    destination: Literal["duckdb", "snowflake"] | None = Field(
        default=None,
        description="duckdb (the default locally) or snowflake (the default on Dagster+).",
    )
    duckdb_path: str | None = Field(default=None, description="The DuckDB file.")
    snowflake_schema: str | None = Field(
        default=None, description="The Snowflake schema (credentials: SNOWFLAKE_* variables)."
    )
    objects: list[str] | None = Field(
        default=None, description="The objects to replicate (default: every one)."
    )
    sync_frequency_hours: int | None = Field(
        default=None, ge=1, le=24, description="The schedule: every N hours, 1 to 24."
    )
    sync_mode: Literal["full", "incremental"] | None = Field(
        default=None, description="full or incremental (a run's config can override it)."
    )
    history: list[str] | str | None = Field(
        default=None,
        description="Objects whose every version is kept in <table>_history, or `all`.",
    )
    key_prefix: list[str] | str = Field(
        default=DEFAULT_KEY_PREFIX, description="The asset keys' prefix: `<prefix>/<table>`."
    )
    events_sensor: bool | None = Field(
        default=None, description="Start invoiced_events_sensor switched on."
    )
    events_poll_seconds: int | None = Field(
        default=None, ge=MIN_EVENTS_POLL_SECONDS, description="How often the sensor polls."
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _api_key_variable_name(cls, value: Any) -> str:
        return api_key_variable(value).env_var_name

    def settings(self, env: Mapping[str, str] | None = None) -> Settings:
        """The settings these attributes make, over the environment's (`load_settings`)."""
        env = dict(os.environ if env is None else env)
        overrides = {
            variable: _as_setting(getattr(self, attribute))
            for attribute, variable in ENVIRONMENT_FOR_ATTRIBUTE.items()
            if getattr(self, attribute) is not None
        }
        if self.objects is not None:
            overrides["INVOICED_DISABLED_OBJECTS"] = ",".join(disabled_objects(self.objects))
        try:
            settings = load_settings({**env, **overrides})
        except SettingsError as exc:
            named = [a for a, v in ENVIRONMENT_FOR_ATTRIBUTE.items() if v in str(exc)]
            where = f" (the component's `{named[0]}` sets it)" if named else ""
            raise SettingsError(f"{exc}{where}") from None
        prefix = [self.key_prefix] if isinstance(self.key_prefix, str) else self.key_prefix
        return dataclasses.replace(
            settings,
            key_prefix=key_prefix_path(prefix),
            api_key_env=self.api_key,
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_definitions(self.settings())


def _as_setting(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def disabled_objects(enabled: list[str]) -> list[str]:
    """The objects not in `enabled`; unknown or no names are an error naming `objects`."""
    names = {n.strip().lower() for n in enabled}
    unknown = sorted(names - set(OBJECTS_BY_NAME))
    if unknown or not names:
        problem = f"names unknown objects: {', '.join(unknown)}" if unknown else "is empty"
        raise SettingsError(
            f"The component's `objects` {problem}. Known: {', '.join(OBJECTS_BY_NAME)}."
        )
    return [name for name in OBJECTS_BY_NAME if name not in names]


def key_prefix_path(parts: list[str]) -> tuple[str, ...]:
    """`key_prefix` as asset key parts: letters, digits and _ each (`a/b` is two parts)."""
    path = tuple(p for part in parts for p in str(part).split("/") if p)
    if not path or not all(re.fullmatch(r"[A-Za-z0-9_]+", p) for p in path):
        raise SettingsError(
            f"The component's `key_prefix` must be asset key parts of letters, digits and _,"
            f" e.g. invoiced or [finance, invoiced]; got {parts!r}."
        )
    return path


DEFS_TEMPLATE = """\
type: TYPE_NAME

# Replicates an Invoiced account into your warehouse: one asset per table (invoiced/<table>),
# with their checks, the jobs invoiced_sync and invoiced_full_reload, the schedule
# invoiced_sync_schedule and the sensor invoiced_events_sensor.
# An attribute left out falls back to its environment variable (in brackets), then its default.
attributes:
  # The environment variable holding the API key (Invoiced: Settings > Developers > API Keys).
  # It is read only inside runs: never write the key itself here.
  api_key: "{{ env.INVOICED_API_KEY }}"
  environment: production          # or sandbox (INVOICED_ENVIRONMENT)
  destination: duckdb              # or snowflake, with the SNOWFLAKE_* variables (INVOICED_DESTINATION)
  duckdb_path: data/warehouse.duckdb  # (INVOICED_DUCKDB_PATH)
  # Every object unless listed (INVOICED_DISABLED_OBJECTS is the opposite list), e.g.:
  # objects: [customers, invoices, payments, subscriptions, credit_notes, estimates,
  #           credit_balance_adjustments]
  sync_frequency_hours: 1          # the schedule, 1 to 24 (INVOICED_SYNC_FREQUENCY_HOURS)
  sync_mode: full                  # or incremental (INVOICED_SYNC_MODE); a run's config overrides it
  key_prefix: invoiced             # asset keys are <key_prefix>/<table>
  events_sensor: false             # true: start invoiced_events_sensor on (INVOICED_EVENTS_SENSOR)
  events_poll_seconds: 60          # at least 30 (INVOICED_EVENTS_POLL_SECONDS)
"""


class InvoicedScaffolder(dg.Scaffolder):
    """`dg scaffold defs invoiced_assets.InvoicedComponent <name>`: a commented defs.yaml."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        if request.scaffold_format != "yaml" or request.append:
            dg.scaffold_component(request, {"api_key": f"{{{{ env.{API_KEY_VARIABLE} }}}}"})
            return
        request.target_path.mkdir(parents=True, exist_ok=True)
        (request.target_path / "defs.yaml").write_text(
            DEFS_TEMPLATE.replace("TYPE_NAME", request.type_name), encoding="utf-8"
        )


InvoicedComponent = dg.scaffold_with(InvoicedScaffolder)(InvoicedComponent)
