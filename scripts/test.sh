#!/usr/bin/env bash
# The test command of the README (and of CI): set everything up, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec .venv/bin/python -m pytest -q "$@"
