#!/usr/bin/env bash
# Install the project into .venv at the versions pinned in requirements/constraints.txt (README,
# Reproducible installs). Shared by scripts/quickstart.sh and scripts/test.sh.
# Usage: bash scripts/install.sh [extras, e.g. "[dev]"]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
for pins in requirements/constraints.txt requirements/build-constraints.txt; do
  if [ ! -f "$pins" ]; then
    echo "scripts/install.sh: $pins is missing; it pins the versions to install (README," \
      "Reproducible installs). Restore it from git, or make it anew with bash scripts/lock.sh." >&2
    exit 1
  fi
done
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c requirements/constraints.txt --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c requirements/constraints.txt --build-constraint requirements/build-constraints.txt -e ".$extras"
