#!/usr/bin/env bash
# Set up .venv and run the whole test suite (slow end-to-end tests included).
# While working: .venv/bin/python -m pytest -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/python -m pytest "$@"
