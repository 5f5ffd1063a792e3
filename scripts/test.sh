#!/usr/bin/env bash
# Install everything the tests need into .venv (Python 3.11) and run the linter and the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
# Progress: one line per test file with the count of tests done so far ("[ 120/596]"); at the end the 15 slowest
# tests and a line for each test skipped or failed, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
"$VPY" -m ruff check .
"$VPY" -m pytest -o console_output_style=count --durations=15 "$@"
