#!/usr/bin/env bash
# Install everything the tests need into .venv (Python 3.11) and run the linter and the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
# Progress: one line per test file with the count of tests done so far ("[ 120/596]"); at the end the 15 slowest
# tests and a line for each test skipped or failed, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/test_remote.py runs a real sshd on 127.0.0.1 (Debian's openssh-server); as root, install it when missing
if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q openssh-server </dev/null >/dev/null \
      || { apt-get update -q </dev/null >/dev/null && apt-get install -y -q openssh-server </dev/null >/dev/null; } \
      || echo "could not install openssh-server: tests/test_remote.py fails in CI, skips elsewhere" >&2
  else
    echo "sshd is missing (apt-get install openssh-server): tests/test_remote.py fails in CI, skips elsewhere" >&2
  fi
fi
source scripts/venv.sh
"$VPY" -m ruff check .
"$VPY" -m pytest -o console_output_style=count --durations=15 "$@"
