#!/usr/bin/env bash
# Install mammodet with everything its commands and tests need, into the active Python (idempotent).
# Use a virtual environment if you prefer: python3 -m venv .venv && . .venv/bin/activate first.
# scripts/constraints.txt pins every package to the version the test suite last passed with, so the same
# install works next month; pyproject.toml's bounds say what a newer install may take (MAMMODET_UNPINNED=1).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CONSTRAINTS=(-c scripts/constraints.txt)
[ "${MAMMODET_UNPINNED:-0}" = 1 ] && CONSTRAINTS=()
"$PYTHON" -m pip install --quiet --disable-pip-version-check "${CONSTRAINTS[@]}" -e ".[serve,export,explain,sweep,dev]"
# The browser test drives Debian's chromium through Playwright (playwright install cannot download here).
if [ ! -x /usr/bin/chromium ]; then
    SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium
fi
