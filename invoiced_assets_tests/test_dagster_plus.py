"""The project deploys to Dagster+ in the current format, checked offline.

`pyproject.toml`'s `[tool.dg.project]` names the code location (dagster_cloud.yaml, deprecated,
is gone). Offline, with this environment's `dg`: `dg check toml` accepts the configuration,
`dg check defs` loads the code location it names, and `dg plus deploy configure` (every answer
given as an option, so it asks nothing and calls no server) writes for Serverless the GitHub
workflow, and for Hybrid also build.yaml, container_context.yaml and a Dockerfile, all naming
this code location. Deploying itself (`dg plus deploy`, `dg plus login`) needs Dagster+.
"""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
LOCATION = "invoiced_assets"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com/invoiced-assets"


def dg(cwd: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INVOICED_", "DAGSTER_"))},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": sys.prefix,
        "DAGSTER_HOME": str(home),
        "HOME": str(home),  # no `dg plus login` configuration of the machine's user
    }
    done = subprocess.run(
        [str(BIN / "dg"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"dg {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_code_location_is_in_pyproject_and_dagster_cloud_yaml_is_gone() -> None:
    assert not (ROOT / "dagster_cloud.yaml").exists()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]
    assert project["directory_type"] == "project"
    assert project["project"] == {
        "root_module": "invoiced_assets",
        "code_location_target_module": "invoiced_assets.definitions",
        "code_location_name": LOCATION,
    }


def test_dg_accepts_the_configuration_and_loads_the_code_location(tmp_path: Path) -> None:
    assert (
        "All TOML configuration files are valid" in dg(ROOT, "check", "toml", home=tmp_path).stdout
    )
    assert "All definitions loaded successfully" in dg(ROOT, "check", "defs", home=tmp_path).stdout


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """What `dg plus deploy configure` reads of the project: its pyproject.toml (a git root)."""
    copy = tmp_path / "repository"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy)
    return copy


def test_configure_serverless_writes_the_deploy_workflow(project_copy: Path) -> None:
    dg(
        project_copy,
        *("plus", "deploy", "configure", "serverless", "--git-provider", "github"),
        *("--python-version", "3.11", "--organization", "acme", "--deployment", "prod"),
        *("--git-root", str(project_copy), "-y"),
        home=project_copy.parent,
    )
    workflow = yaml.safe_load(
        (project_copy / ".github/workflows/dagster-plus-deploy.yml").read_text()
    )
    assert workflow["env"]["DAGSTER_CLOUD_ORGANIZATION"] == "acme"
    assert workflow["env"]["DAGSTER_PROJECT_DIR"] == "."
    commands = [step.get("with", {}).get("command", "") for step in _steps(workflow)]
    assert any("plus deploy build-and-push --agent-type=serverless" in c for c in commands)
    assert "plus deploy finish" in commands


def test_configure_hybrid_writes_build_and_container_context(project_copy: Path) -> None:
    dg(
        project_copy,
        *("plus", "deploy", "configure", "hybrid", "--git-provider", "github"),
        *("--agent-platform", "k8s", "--registry-url", REGISTRY, "--python-version", "3.11"),
        *("--organization", "acme", "--deployment", "prod", "--git-root", str(project_copy)),
        "-y",
        home=project_copy.parent,
    )
    build = yaml.safe_load((project_copy / "build.yaml").read_text())
    assert build == {"directory": ".", "registry": REGISTRY}
    assert (project_copy / "container_context.yaml").exists()  # k8s settings, all commented out
    assert "FROM python:3.11" in (project_copy / "Dockerfile").read_text()
    workflow = (project_copy / ".github/workflows/dagster-plus-deploy.yml").read_text()
    assert f"--location-name={LOCATION}" in workflow and f"{REGISTRY}:" in workflow


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]
