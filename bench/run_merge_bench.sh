#!/usr/bin/env bash
# bench/run_merge_bench.sh: builds //bench:merge_bench with -c opt, runs every
# benchmark 5 times in random interleaved order (so drift on a shared machine
# hits baseline and subject alike), and prints the median items/s of each and
# their ratios against BM_RawLmdbPut measured in the same run.
# Usage: bench/run_merge_bench.sh [extra Google Benchmark flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bazel build -c opt //bench:merge_bench
mkdir -p bench/out
out=bench/out/merge_bench.txt
./bazel-bin/bench/merge_bench --benchmark_repetitions=5 \
  --benchmark_enable_random_interleaving=true "$@" | tee "$out"

echo
echo "Medians ($(date -u +%Y-%m-%d), $(nproc) cores):"
awk '
  /_median/ {
    name = $1; sub(/\/.*/, "", name)
    for (i = 1; i <= NF; i++) if ($i ~ /^items_per_second=/) {
      v = $i; sub(/items_per_second=/, "", v)
      mult = 1
      if (v ~ /k\/s$/) mult = 1e3; else if (v ~ /M\/s$/) mult = 1e6
      sub(/[kM]?\/s$/, "", v)
      rate[name] = v * mult
      order[++n] = name
    }
  }
  END {
    base = rate["BM_RawLmdbPut"]
    for (i = 1; i <= n; i++) {
      r = rate[order[i]]
      printf "  %-20s %12.0f records/s   %.2fx BM_RawLmdbPut\n", order[i], r, (base > 0 ? r / base : 0)
    }
  }' "$out"
