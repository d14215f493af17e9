"""This project's code location: the definitions `component.build_definitions` makes from the
environment's settings, the same code a `dg` project's `InvoicedComponent` runs."""

from invoiced_assets.component import build_definitions
from invoiced_assets.settings import load_settings

defs = build_definitions(load_settings())
