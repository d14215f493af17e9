"""Data-quality checks pass on good data and fail on crafted bad data, in the UI's terms.

Pure checks: duplicate and null keys, orphan child rows, counts off the API's X-Total-Count,
a collapse to zero. End to end: every check passes on a faithful load; deleting most customers in
Invoiced trips the collapse check (error) and the invoices' customer references (warning).
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from invoiced_assets import checks
from invoiced_assets.assets import table_assets
from invoiced_assets.catalogue import CATALOGUE
from invoiced_assets.emulator import EmulatorServer

from .conftest import API_KEY, use_emulator
from .test_sync_job import run_sync


def test_primary_key() -> None:
    good = pd.DataFrame({"id": [1, 2, 3]})
    assert checks.check_primary_key(good, ["id"]).passed
    duplicated = checks.check_primary_key(pd.DataFrame({"id": [1, 2, 2]}), ["id"])
    assert not duplicated.passed and duplicated.metadata["duplicated_rows"] == 2
    nulls = checks.check_primary_key(pd.DataFrame({"id": [1, None]}), ["id"])
    assert not nulls.passed and nulls.metadata["null_keys"] == 1
    child = pd.DataFrame({"invoice_id": [1, 1, 2], "position": [0, 1, 0]})
    assert checks.check_primary_key(child, ["invoice_id", "position"]).passed
    child.loc[2] = [1, 1]
    assert not checks.check_primary_key(child, ["invoice_id", "position"]).passed


def test_row_count_against_x_total_count() -> None:
    assert checks.check_row_count(100, 100, 100).passed
    assert checks.check_row_count(101, 100, 102).passed  # a record created during the walk
    outcome = checks.check_row_count(90, 100, 100)  # rows lost on the way
    assert not outcome.passed and "allowance" in outcome.metadata
    assert not checks.check_row_count(10, None, None).passed


def test_references() -> None:
    assert checks.check_references([1, 2, None], {1, 2}, target="customers.id").passed
    orphan = checks.check_references([1, 3, 3], {1, 2}, target="invoices.id", nullable=False)
    assert not orphan.passed and orphan.metadata["unresolved"] == 2
    assert orphan.metadata["unresolved_examples"] == "3"
    assert not checks.check_references([None], {1}, target="x", nullable=False).passed


def test_collapse() -> None:
    assert checks.check_collapse(5_000, None, 0.5).passed
    assert checks.check_collapse(4_000, 5_000, 0.5).passed
    assert not checks.check_collapse(0, 5_000, 0.5).passed
    assert not checks.check_collapse(2_000, 5_000, 0.5).passed
    assert checks.check_collapse(0, 0, 0.5).passed


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.2, seed=31, api_key=API_KEY) as server:
        use_emulator(monkeypatch, server, tmp_path / "warehouse.duckdb", DAGSTER_HOME=str(tmp_path))
        yield server


def evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], object]:
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            found[(evaluation.asset_key.path[-1], evaluation.check_name)] = evaluation
    return found


def test_every_check_passes_on_a_faithful_load(account: EmulatorServer) -> None:
    result = run_sync()
    assert result.success
    found = evaluations(result)
    tables = table_assets(CATALOGUE)
    assert len(found) == sum(len(t.check_names) for t in tables) > 3 * len(tables)
    failed = [key for key, evaluation in found.items() if not evaluation.passed]
    assert not failed


def test_collapse_and_dangling_customers_are_caught(
    account: EmulatorServer, tmp_path: Path
) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert run_sync(instance=instance).success
        account.mutate("customers", delete=account.truth()["customers"] - 10)
        result = run_sync(instance=instance)
    found = evaluations(result)
    collapse = found[("customers", checks.COLLAPSE)]
    assert not collapse.passed and collapse.severity == dg.AssetCheckSeverity.ERROR
    assert collapse.metadata["previous_rows"].value > 100 and collapse.metadata["rows"].value == 10
    references = found[("invoices", checks.CUSTOMER_REFERENCES)]
    assert not references.passed and references.severity == dg.AssetCheckSeverity.WARN
    assert found[("invoices", checks.COLLAPSE)].passed
    assert found[("invoice_line_items", checks.PARENT_REFERENCES)].passed
