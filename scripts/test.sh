#!/usr/bin/env bash
# scripts/test.sh: runs every test with Bazel and ends with the plain line
# "N passed, N failed" counted from Bazel's per-target summary. Exits
# non-zero if any test failed or if no test ran at all.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT

bazel test //... "$@" 2>&1 | tee "$log"
bazel_status=${PIPESTATUS[0]}

# Summary lines look like "//store:store_test   PASSED in 0.5s" or
# "//x:y   (cached) PASSED in 0.5s" or "//x:y   FAILED in 3 out of 3 in 9s".
passed=$(grep -E '^//[^ ]+ +(\(cached\) )?PASSED' "$log" | wc -l)
failed=$(grep -E '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE|FLAKY)' "$log" | wc -l)
if [ "$bazel_status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # The build itself failed before any test could report.
  failed=1
fi
echo "${passed} passed, ${failed} failed"
if [ "$bazel_status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
  exit 1
fi
