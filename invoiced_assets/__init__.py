"""invoiced_assets: replicate an Invoiced account into a warehouse you own, with Dagster.

- `InvoicedComponent`: the Component for a `dg` project (`dg scaffold defs
  invoiced_assets.InvoicedComponent invoiced`).
- `defs`: this project's own definitions (what `dagster job execute -m invoiced_assets` loads),
  as `@dg.definitions`: built only when a code location loads them. Looking through this module
  for components (`dg list components`, in a user's project) builds nothing.

Both are fetched lazily, so that importing a submodule (the emulator, the API client) neither
pays for importing Dagster nor depends on the pipeline's environment variables.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        import dagster as dg

        @dg.definitions
        def defs() -> dg.Definitions:
            from invoiced_assets.definitions import defs

            return defs

        globals()["defs"] = defs  # one loader, however often it is asked for
        return defs
    if name == "InvoicedComponent":
        from invoiced_assets.component import InvoicedComponent

        return InvoicedComponent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["InvoicedComponent", "defs"]
