#!/usr/bin/env bash
# Install the project with its test dependencies and run the whole test suite (pytest).
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k emulator
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
.venv/bin/python -m pytest "$@"
