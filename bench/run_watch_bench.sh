#!/usr/bin/env bash
# bench/run_watch_bench.sh: builds //bench:watch_bench with -c opt and runs
# it: sequential durable puts with 0 watches and with 5,000 idle watches on
# a keyspace nobody writes, in paired rounds, store under /var/tmp (disk).
# Usage: bench/run_watch_bench.sh [watch_bench flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bazel build -c opt //bench:watch_bench
./bazel-bin/bench/watch_bench "$@"
