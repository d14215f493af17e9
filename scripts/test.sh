#!/usr/bin/env bash
# Install the project with its test dependencies, at the versions pinned in
# requirements/constraints.txt (README, Reproducible installs), and run the whole test suite
# (pytest).
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k emulator
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh '[dev]'
.venv/bin/python -m pytest "$@"
