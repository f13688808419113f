#!/usr/bin/env bash
# tests/http/run_python_test.sh: runs a Python test of tests/http with
# Debian's python3 (for python3-prometheus-client) and the peerkv binary
# given as the first argument.
set -euo pipefail
export PEERKV="$1"
shift
exec /usr/bin/python3 "$@"
