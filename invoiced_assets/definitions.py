"""Assembles the Dagster definitions from the settings: nothing else happens here."""

import dagster as dg

from invoiced_assets.api import InvoicedResource
from invoiced_assets.assets import IO_MANAGER_KEY, build_invoiced_assets
from invoiced_assets.catalogue import CATALOGUE
from invoiced_assets.destinations import build_io_manager
from invoiced_assets.schedules import build_sync_job, build_sync_schedule
from invoiced_assets.settings import Settings, load_settings
from invoiced_assets.sync import SyncOptions


def build_definitions(settings: Settings) -> dg.Definitions:
    sync_job = build_sync_job()
    return dg.Definitions(
        assets=[
            build_invoiced_assets(
                [obj for obj in CATALOGUE if obj.name not in settings.disabled_objects],
                destination=settings.destination,
                frequency_hours=settings.sync_frequency_hours,
                options=SyncOptions(
                    incremental=settings.sync_mode == "incremental",
                    full_reconcile_hours=settings.full_reconcile_hours,
                    min_row_ratio=settings.min_row_ratio,
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
            )
        ],
        jobs=[sync_job],
        schedules=[build_sync_schedule(sync_job, settings.sync_frequency_hours)],
        resources={
            "invoiced": InvoicedResource(
                api_key=dg.EnvVar("INVOICED_API_KEY"),
                environment=settings.environment,
                base_url=settings.base_url,
                max_in_flight=settings.max_in_flight,
            ),
            IO_MANAGER_KEY: build_io_manager(settings),
        },
    )


defs = build_definitions(load_settings())
