#!/usr/bin/env bash
# Set up a virtual environment with the pinned versions (requirements-dev.txt), then lint and run the tests.
# Tests that need the shared data folder use $SCL_LLE_SHARED (default: ../shared) and skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/python -m pytest "$@"
