#!/usr/bin/env bash
# The run command of the README: set up, bring the catalog to the newest schema, serve.
# Embedded defaults: SQLite and the spool under ./spool, the offline default models,
# DICOM on 127.0.0.1:11112 as AE APOLO. Override with APOLO_* variables or --config FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/apolo-node db upgrade "$@"
exec .venv/bin/apolo-node serve "$@"
