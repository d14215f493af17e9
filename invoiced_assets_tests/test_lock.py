"""The lock is current: requirements/constraints.txt pins, at exactly the version installed here,
every distribution that invoiced_assets and its dev extra require (walking the installed metadata
recursively, from the project's requirements and pyproject.toml's), and pins nothing else but pip;
each direct requirement in pyproject.toml, and each build requirement in
requirements/build-constraints.txt, accepts its pin; and the set required is the same on Linux and
macOS and on every Python the project supports, so the one file holds for all of them.

Reads installed metadata and the repository's files only: no network. CI installs a clean clone
with the constraints (scripts/test.sh) and runs this, which proves that a fresh machine gets the
pinned versions and that they are the versions the rest of the suite passes with.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
BUILD_CONSTRAINTS = ROOT / "requirements" / "build-constraints.txt"
PROJECT = canonicalize_name("invoiced_assets")
EXTRAS = frozenset({"dev"})
# Pinned for the scripts' `pip install --upgrade pip`, though nothing the project installs needs it.
INSTALLERS = frozenset({canonicalize_name("pip")})
REGENERATE = "bash scripts/lock.sh to upgrade the lock, or bash scripts/test.sh to install it"

# Marker values of the platforms the project runs on (sys_platform, platform_system,
# platform_machine), and of the Pythons it supports.
PLATFORMS: tuple[tuple[str, str, str], ...] = (
    ("linux", "Linux", "x86_64"),
    ("linux", "Linux", "aarch64"),
    ("darwin", "Darwin", "arm64"),
    ("darwin", "Darwin", "x86_64"),
)
PYTHONS = ("3.11", "3.12", "3.13", "3.14", "3.15")


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _direct_requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    extras = project.get("optional-dependencies", {})
    return [
        Requirement(r) for r in [*project["dependencies"], *(r for e in EXTRAS for r in extras[e])]
    ]


def _pins(path: Path) -> dict[NormalizedName, list[Requirement]]:
    """Every pin of a constraints file by name, markers and all: each line must be `name==version`,
    optionally with a marker."""
    pins: dict[NormalizedName, list[Requirement]] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            req = None
        specs = list(req.specifier) if req else []
        assert req and len(specs) == 1 and specs[0].operator == "==" and not req.extras, (
            f"{path.name}:{number}: {raw!r} is not a pin (name==version)"
        )
        pins.setdefault(canonicalize_name(req.name), []).append(req)
    return pins


def _pinned_here(path: Path) -> dict[NormalizedName, Version]:
    """The pin of each name whose marker holds in this environment."""
    here: dict[NormalizedName, Version] = {}
    for name, reqs in _pins(path).items():
        versions = [
            Version(next(iter(r.specifier)).version)
            for r in reqs
            if r.marker is None or r.marker.evaluate()
        ]
        assert len(versions) <= 1, f"{path.name} pins {name} more than once here: {versions}"
        if versions:
            here[name] = versions[0]
    return here


def _installed() -> dict[NormalizedName, importlib.metadata.Distribution]:
    """The distributions importable here, the first on sys.path of each name (the one imported)."""
    found: dict[NormalizedName, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist)
    return found


def _required(
    installed: Mapping[NormalizedName, importlib.metadata.Distribution],
    environment: Mapping[str, str] | None = None,
) -> tuple[set[NormalizedName], set[NormalizedName]]:
    """The distributions that the project with its dev extra requires, recursively, under the
    marker values `environment` (default: this one's): (required and installed, required and
    not installed)."""
    env = dict(environment or {})
    extras_of: dict[NormalizedName, set[str]] = {}
    missing: set[NormalizedName] = set()

    def applies(req: Requirement, extras: Iterable[str]) -> bool:
        return req.marker is None or any(
            req.marker.evaluate({**env, "extra": e}) for e in ["", *extras]
        )

    todo: list[tuple[NormalizedName, frozenset[str]]] = [(PROJECT, EXTRAS)]
    todo += [
        (canonicalize_name(r.name), frozenset(r.extras))
        for r in _direct_requirements()
        if applies(r, ())
    ]
    while todo:
        name, extras = todo.pop()
        dist = installed.get(name)
        if dist is None:
            missing.add(name)
            continue
        if name in extras_of and extras <= extras_of[name]:
            continue
        extras_of.setdefault(name, set()).update(extras)
        for line in dist.requires or []:
            req = Requirement(line)
            if applies(req, extras_of[name]):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return set(extras_of) - {PROJECT}, missing


def test_every_required_distribution_is_pinned_at_its_installed_version() -> None:
    installed = _installed()
    required, missing = _required(installed)
    assert not missing, f"required but not installed: {sorted(missing)}; {REGENERATE}"
    pinned = _pinned_here(CONSTRAINTS)
    wrong = {
        name: (installed[name].version, str(pinned[name]) if name in pinned else "not pinned")
        for name in sorted(required)
        if name not in pinned or pinned[name] != Version(installed[name].version)
    }
    assert not wrong, (
        f"installed version and pin differ, {{name: (installed, pin)}}: {wrong}; {REGENERATE}"
    )


def test_nothing_else_is_pinned() -> None:
    required, _ = _required(_installed())
    stale = sorted(set(_pins(CONSTRAINTS)) - required - INSTALLERS)
    assert not stale, f"pinned but required by nothing: {stale}; {REGENERATE}"


def _refused(
    requirements: Iterable[Requirement], pinned: Mapping[NormalizedName, Version]
) -> list[str]:
    """The requirements (those whose marker holds here) that no pin satisfies."""
    refused = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate():
            continue
        pin = pinned.get(canonicalize_name(req.name))
        if pin is None or not req.specifier.contains(pin, prereleases=True):
            refused.append(f"{req} (pin: {pin or 'none'})")
    return refused


def test_every_direct_requirement_accepts_its_pin() -> None:
    refused = _refused(_direct_requirements(), _pinned_here(CONSTRAINTS))
    assert not refused, (
        f"pyproject.toml requirements that their pin does not satisfy: {refused}; {REGENERATE}"
    )


def test_every_build_requirement_accepts_its_pin() -> None:
    requires = [Requirement(r) for r in _pyproject()["build-system"]["requires"]]
    refused = _refused(requires, _pinned_here(BUILD_CONSTRAINTS))
    assert not refused, (
        f"[build-system] requires that {BUILD_CONSTRAINTS.name} does not satisfy: {refused};"
        f" {REGENERATE}"
    )


def test_the_same_distributions_are_required_on_every_supported_platform_and_python() -> None:
    installed = _installed()
    here, _ = _required(installed)
    differ: dict[str, dict[str, list[NormalizedName]]] = {}
    for sys_platform, system, machine in PLATFORMS:
        for python in PYTHONS:
            env = {
                "sys_platform": sys_platform,
                "platform_system": system,
                "platform_machine": machine,
                "os_name": "posix",
                "python_version": python,
                "python_full_version": f"{python}.0",
            }
            there, missing = _required(installed, env)
            if there != here or missing:
                differ[f"{system} {machine}, Python {python}"] = {
                    "only here": sorted(here - there),
                    "only there": sorted((there - here) | missing),
                }
    assert not differ, (
        f"the set of required distributions differs from this environment's, so one lock cannot"
        f" hold for every platform: {differ}"
    )
