#!/usr/bin/env bash
# bench/run_access_bench.sh: what access checks cost the client API
# (bench/README.md, "Access checks"), -c opt, in one run: `peerkv bench`
# GET and PUT against two servers over their Unix sockets, one checking
# every call against the policies (the default) and one started with
# --no-access-checks (the path before policies), interleaved, three rounds.
# Both hold a group and five policies, so the checked server's lookups are
# not of an empty table.
# Usage: bench/run_access_bench.sh [requests]
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-100000}
bazel build -c opt //cli:peerkv
peerkv=./bazel-bin/cli/peerkv
work=$(mktemp -d /var/tmp/peerkv-access-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for s in checked plain; do
  "$peerkv" --data "$work/$s" init --user bench >/dev/null
  "$peerkv" --data "$work/$s" group create readers >/dev/null
  for i in 1 2 3 4 5; do
    "$peerkv" --data "$work/$s" policy set "shared$i" --read readers >/dev/null
  done
done
"$peerkv" serve --data "$work/checked" --listen 127.0.0.1:0 >"$work/checked.log" 2>&1 &
pids+=($!)
"$peerkv" serve --data "$work/plain" --listen 127.0.0.1:0 --no-access-checks >"$work/plain.log" 2>&1 &
pids+=($!)
for s in checked plain; do
  for _ in $(seq 100); do grep -q "listening on" "$work/$s.log" && break; sleep 0.1; done
done
echo "== peerkv bench -c 50 -n $requests -t put,get ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
for round in 1 2 3; do
  echo "-- round $round: --no-access-checks"
  "$peerkv" --server "unix:$work/plain/peerkv.sock" bench -c 50 -n "$requests" -t put,get
  echo "-- round $round: checked"
  "$peerkv" --server "unix:$work/checked/peerkv.sock" bench -c 50 -n "$requests" -t put,get
done
