"""`InvoicedComponent` works in a user's own `dg` project, offline, and builds exactly what this
project's definitions build.

End to end: a `dg` project made in a temporary folder lists the component (`dg list
components`), `dg scaffold defs invoiced_assets.InvoicedComponent invoiced` writes a commented
defs.yaml taking the key as `{{ env.INVOICED_API_KEY }}`, `dg check defs` passes, `dg list defs`
shows the tables, checks, jobs, schedule and sensor, and `dg launch` materializes the tables
from the emulator into DuckDB. In process: attributes override the environment, the key is
never a literal, and wrong attributes fail naming the attribute.
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from invoiced_assets.component import InvoicedComponent, build_definitions
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.settings import SettingsError, load_settings

from .conftest import API_KEY

BIN = Path(sys.executable).parent
PYPROJECT = """\
[project]
name = "acme_data"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["dagster", "invoiced_assets"]

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "acme_data"
"""
DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def make_project(root: Path) -> Path:
    """A minimal `dg` project, as `dg scaffold project` lays it out (flat: no src/)."""
    (root / "acme_data" / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "acme_data" / "__init__.py").write_text("")
    (root / "acme_data" / "defs" / "__init__.py").write_text("")
    (root / "acme_data" / "definitions.py").write_text(DEFINITIONS)
    return root


@dataclass
class Dg:
    """One `dg` command, started. Its output goes to files, so that it never waits on a full
    pipe while another command is awaited."""

    args: tuple[str, ...]
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def finish(self) -> str:
        """Wait for the command; assert it succeeded and return its output."""
        try:
            self.process.wait(timeout=300)
        finally:
            self.stop()
        stdout, stderr = self.stdout.read_text(), self.stderr.read_text()
        command = " ".join(self.args)
        assert self.process.returncode == 0, f"dg {command} failed:\n{stdout}\n{stderr}"
        return stdout

    def stop(self) -> None:
        """Stop the command if it is still going (after a failure elsewhere)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_dg(project: Path, *args: str, env: dict[str, str] | None = None) -> Dg:
    """Start `dg` of this environment in `project`, as a user with it activated does."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INVOICED_", "DAGSTER_"))},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": sys.prefix,
        **(env or {}),
    }
    logs = Path(tempfile.mkdtemp(prefix="dg-", dir=project.parent))
    with (logs / "stdout").open("wb") as stdout, (logs / "stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [str(BIN / "dg"), *args], cwd=project, env=environment, stdout=stdout, stderr=stderr
        )
    return Dg(args, process, logs / "stdout", logs / "stderr")


def dg_command(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `dg` in `project` (see `start_dg`) and return its output."""
    return start_dg(project, *args, env=env).finish()


def test_a_dg_project_scaffolds_checks_lists_and_materializes_the_component(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "acme")
    # Commands that neither read nor write what the other writes run side by side (each `dg`
    # mostly imports Python, one core each); every one must succeed.
    listing = start_dg(project, "list", "components")
    try:
        dg_command(project, "scaffold", "defs", "invoiced_assets.InvoicedComponent", "invoiced")
        assert "invoiced_assets.InvoicedComponent" in listing.finish()
    finally:
        listing.stop()
    defs_yaml = project / "acme_data" / "defs" / "invoiced" / "defs.yaml"
    scaffolded = yaml.safe_load(defs_yaml.read_text())
    assert scaffolded["type"] == "invoiced_assets.InvoicedComponent"
    assert scaffolded["attributes"]["api_key"] == "{{ env.INVOICED_API_KEY }}"
    assert {"environment", "destination", "sync_frequency_hours", "sync_mode", "key_prefix"} <= set(
        scaffolded["attributes"]
    )

    # The user's choices: two objects, their own key prefix, a DuckDB file of theirs.
    warehouse = tmp_path / "acme.duckdb"
    attributes = {
        **scaffolded["attributes"],
        "objects": ["customers", "invoices"],
        "key_prefix": ["acme", "invoiced"],
        "duckdb_path": str(warehouse),
        "sync_frequency_hours": 6,
    }
    defs_yaml.write_text(yaml.safe_dump({"type": scaffolded["type"], "attributes": attributes}))
    with EmulatorServer(scale=0.2, seed=81, api_key=API_KEY) as account:
        env = {
            "INVOICED_API_KEY": API_KEY,
            "INVOICED_BASE_URL": account.url,
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        }
        (tmp_path / "dagster_home").mkdir()
        # Checking and listing only load the definitions: they run beside the launch.
        commands = [
            start_dg(project, "check", "defs"),
            start_dg(project, "list", "defs", "--json"),
            start_dg(project, "launch", "--job", "invoiced_sync", env=env),
        ]
        try:
            _, listed_json, _ = [command.finish() for command in commands]
        finally:
            for command in commands:
                command.stop()
        truth = account.truth()
    listed = json.loads(listed_json)
    keys = {asset["asset_key"] for asset in listed["assets"]}
    invoice_tables = ["invoices", "invoice_line_items", "invoice_discounts", "invoice_taxes"]
    assert keys == {f"acme/invoiced/{table}" for table in ["customers", *invoice_tables]}
    assert {job["name"] for job in listed["jobs"]} == {"invoiced_sync", "invoiced_full_reload"}
    assert [s["name"] for s in listed["schedules"]] == ["invoiced_sync_schedule"]
    assert [s["name"] for s in listed["sensors"]] == ["invoiced_events_sensor"]
    assert any(c["key"].startswith("acme/invoiced/invoices:") for c in listed["asset_checks"])
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        counts = {
            table: connection.execute(f"select count(*) from invoiced.{table}").fetchall()[0][0]
            for table in ("customers", "invoices")
        }
    assert counts == {"customers": truth["customers"], "invoices": truth["invoices"]}


def summary(defs: dg.Definitions) -> dict[str, object]:
    """What a code location offers: asset and check keys, jobs, schedules, sensors, resources."""
    repository = defs.get_repository_def()
    return {
        "assets": sorted(spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()),
        "checks": sorted(k.to_user_string() for k in repository.asset_graph.asset_check_keys),
        "jobs": sorted(job.name for job in repository.get_all_jobs()),
        "schedules": sorted(s.name for s in repository.schedule_defs),
        "sensors": sorted(s.name for s in repository.sensor_defs),
        "resources": sorted(defs.resources or {}),
    }


def test_the_component_builds_what_the_project_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("INVOICED_"):
            monkeypatch.delenv(name)
    from_component = InvoicedComponent().build_defs(None)  # type: ignore[arg-type]
    assert summary(from_component) == summary(build_definitions(load_settings({})))


def test_attributes_override_the_environment_and_fall_back_to_it() -> None:
    env = {"INVOICED_SYNC_MODE": "incremental", "INVOICED_SYNC_FREQUENCY_HOURS": "3"}
    settings = InvoicedComponent(sync_frequency_hours=12).settings(env)
    assert settings.sync_frequency_hours == 12 and settings.sync_mode == "incremental"
    settings = InvoicedComponent(objects=["invoices"], key_prefix="billing/invoiced").settings({})
    assert settings.key_prefix == ("billing", "invoiced")
    assert "customers" in settings.disabled_objects and "invoices" not in settings.disabled_objects
    assert InvoicedComponent(events_sensor=True).settings({}).events_sensor


def test_the_api_key_is_an_environment_variable_never_the_key() -> None:
    resolved = InvoicedComponent.resolve_from_yaml('api_key: "{{ env.ACME_INVOICED_KEY }}"')
    assert resolved.api_key == "ACME_INVOICED_KEY"
    assert resolved.settings({}).api_key_env == "ACME_INVOICED_KEY"
    assert InvoicedComponent(api_key=dg.EnvVar("OTHER")).api_key == "OTHER"
    secret = "sk_live_0123456789"
    with pytest.raises(Exception, match="api_key must name the environment variable") as raised:
        InvoicedComponent.resolve_from_yaml(f"api_key: {secret}")
    assert secret not in str(raised.value).split("input_value")[0]


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"objects": ["invoices", "refunds"]}, "`objects` names unknown objects: refunds"),
        ({"objects": []}, "`objects` is empty"),
        ({"key_prefix": "bad prefix"}, "`key_prefix` must be asset key parts"),
        ({"duckdb_path": "data/invoiced.duckdb"}, "component's `duckdb_path` sets it"),
    ],
)
def test_wrong_attributes_fail_naming_the_attribute(
    attributes: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=message.replace("`", ".")):
        InvoicedComponent(**attributes).settings({})  # type: ignore[arg-type]
