#!/usr/bin/env bash
# Install everything the tests need into .venv (Python 3.11) and run the linter and the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
"$VPY" -m ruff check .
"$VPY" -m pytest -q "$@"
