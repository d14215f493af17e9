#!/usr/bin/env bash
# Install the project with its test dependencies, at the versions pinned in
# requirements/constraints.txt (README, Reproducible installs), and run the whole test suite
# (pytest).
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k emulator
set -euo pipefail
cd "$(dirname "$0")/.."
for pins in requirements/constraints.txt requirements/build-constraints.txt; do
  if [ ! -f "$pins" ]; then
    echo "scripts/test.sh: $pins is missing; it pins the versions to install (README," \
      "Reproducible installs). Restore it from git, or make it anew with bash scripts/lock.sh." >&2
    exit 1
  fi
done
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c requirements/constraints.txt --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c requirements/constraints.txt --build-constraint requirements/build-constraints.txt -e '.[dev]'
.venv/bin/python -m pytest "$@"
