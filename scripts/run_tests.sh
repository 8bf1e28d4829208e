#!/usr/bin/env bash
# THE test command: installs the dev tools (scripts/setup.sh --dev), lints, type-checks, runs pytest.
# Extra arguments go to pytest, e.g.  scripts/run_tests.sh tests/test_local_stack.py -x
# The integration tests start their own Azurite and scoring service on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --dev

echo "run_tests: ruff check ."
.venv/bin/ruff check .

echo "run_tests: mypy (lib, service, ui, scripts, pages, app.py)"
.venv/bin/mypy

echo "run_tests: pytest $*"
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "run_tests: ERROR: pytest collected no tests (exit 5) - check the paths and -k/-m filters" >&2
  exit 1
fi
exit "$status"
