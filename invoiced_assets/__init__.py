"""invoiced_assets: replicate an Invoiced account into a warehouse you own, with Dagster.

`defs` (what `dagster job execute -m invoiced_assets` loads) is built on first access, so that
importing a submodule (the emulator, the API client) neither pays for loading every definition
nor depends on the pipeline's environment variables.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from invoiced_assets.definitions import defs

        return defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["defs"]
