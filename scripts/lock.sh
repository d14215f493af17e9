#!/usr/bin/env bash
# Regenerate the lock: requirements/constraints.txt, the exact version of every distribution that
# scripts/quickstart.sh and scripts/test.sh install, and requirements/build-constraints.txt, the
# build backend pip installs the project itself with. Everything is resolved afresh, to the
# newest releases that pyproject.toml allows, in a venv under a temporary directory (.venv is not
# touched), then written with pip freeze. Upgrading is: this, then bash scripts/test.sh (which
# installs the new pins into .venv and runs the tests), then commit both files.
# Usage: bash scripts/lock.sh
# The Python is $PYTHON (default python3) and must be the oldest one pyproject.toml allows
# (requires-python), so that no pin is a release that has dropped it.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
lock=requirements/constraints.txt
build_lock=requirements/build-constraints.txt

"$python" - <<'EOF'
import re
import sys

if sys.version_info < (3, 11):
    sys.exit(f"scripts/lock.sh: Python {sys.version.split()[0]} is too old to read pyproject.toml")
import tomllib

with open("pyproject.toml", "rb") as f:
    spec = tomllib.load(f)["project"]["requires-python"]
m = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip())
if m is None:
    sys.exit(f"scripts/lock.sh: no oldest Python in requires-python = {spec!r}")
oldest = (int(m[1]), int(m[2]))
if sys.version_info[:2] != oldest:
    sys.exit(
        f"scripts/lock.sh: {sys.executable} is Python {sys.version.split()[0]}, but the lock is"
        f" made with Python {oldest[0]}.{oldest[1]}, the oldest that pyproject.toml allows"
        f" (requires-python = {spec!r}), so that no pin is a release that has dropped it."
        f" Run it as PYTHON=/path/to/python{oldest[0]}.{oldest[1]} bash scripts/lock.sh"
    )
EOF

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip=(--quiet --disable-pip-version-check)

# The build backend, resolved as pip's isolated build would: [build-system] requires, newest.
"$python" -c 'import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))' >"$tmp/build-requires.txt"
"$python" -m venv "$tmp/venv"
venv_python="$tmp/venv/bin/python"
"$venv_python" -m pip install "${pip[@]}" --upgrade pip
"$venv_python" -m pip install "${pip[@]}" --target "$tmp/build" -r "$tmp/build-requires.txt"
"$venv_python" -m pip freeze --all --path "$tmp/build" >"$tmp/build-pins.txt"

# The project with its dev extra, built with that backend; --upgrade-strategy eager also moves
# what the new venv came with (setuptools on Python 3.11) to its newest release.
"$venv_python" -m pip install "${pip[@]}" --upgrade --upgrade-strategy eager \
  --build-constraint "$tmp/build-pins.txt" -e '.[dev]'
"$venv_python" -m pip check
"$venv_python" -m pip freeze --all --exclude-editable >"$tmp/pins.txt"

made_with="$("$venv_python" -c 'import platform as p
print(p.python_implementation(), p.python_version(), "on", p.system(), p.machine())')"
today="$(date -u +%Y-%m-%d)"
mkdir -p requirements
{
  cat <<EOF
# requirements/constraints.txt: the lock. The exact version of every distribution that
# \`bash scripts/quickstart.sh\` and \`bash scripts/test.sh\` install (pip -c), so that a fresh
# machine gets the versions the tests passed with. pyproject.toml keeps the direct requirements
# and the ranges they allow; this file keeps what was resolved within them.
#
# Made by scripts/lock.sh on $today with $made_with:
# pip freeze --all of a new venv holding nothing but \`pip install -e '.[dev]'\` (and the pip
# that installed it).
# It holds for Linux and macOS, Python 3.11 and newer: no requirement in this set has a marker
# that tells them apart (only Windows would differ, and the project does not support it).
# Upgrade: bash scripts/lock.sh (every pin to the newest release pyproject.toml allows), then
# bash scripts/test.sh, then commit this file with requirements/build-constraints.txt.
# invoiced_assets_tests/test_lock.py checks that this file matches what is installed.
EOF
  cat "$tmp/pins.txt"
} >"$tmp/constraints.txt"
{
  cat <<EOF
# requirements/build-constraints.txt: the build backend that pip installs the project itself
# with (pyproject.toml [build-system] requires), pinned; scripts/quickstart.sh and
# scripts/test.sh pass it to pip as --build-constraint.
# Made by scripts/lock.sh on $today with $made_with.
# Upgrade: bash scripts/lock.sh.
EOF
  cat "$tmp/build-pins.txt"
} >"$tmp/build-constraints.txt"

changes() {  # the pins of a committed file against the new one, or all of the new one
  if [ -f "$1" ]; then diff <(grep -v '^#' "$1") <(grep -v '^#' "$2") | grep '^[<>]' || true; fi
}
echo "Pins that changed (< before, > now):"
changes "$lock" "$tmp/constraints.txt"
changes "$build_lock" "$tmp/build-constraints.txt"
mv "$tmp/constraints.txt" "$lock"
mv "$tmp/build-constraints.txt" "$build_lock"
echo "Wrote $lock and $build_lock. Next: bash scripts/test.sh, then commit them."
