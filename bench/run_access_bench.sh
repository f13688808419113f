#!/usr/bin/env bash
# bench/run_access_bench.sh: what access checks cost the client API
# (bench/README.md, "Access checks"), -c opt, in one run: `peerkv bench`
# PUT and GET against two servers over their Unix sockets, one checking
# every call against the policies (the default) and one started with
# --no-access-checks (the path before policies), interleaved (the order
# flips each round). Both hold a group and five policies, so the checked
# server's lookups are not of an empty table.
# Beside each throughput it prints the server process's CPU time (utime +
# stime from /proc/PID/stat) per request served: on a shared machine the
# throughput swings with the other load, the CPU a request costs much less.
# The last lines: per test, the median and range of the rounds'
# checked / unchecked CPU per request.
# Usage: bench/run_access_bench.sh [requests [rounds]]
# (PEERKV=path: that peerkv binary instead of building //cli:peerkv)
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-100000}
rounds=${2:-3}
[ -n "${PEERKV:-}" ] || bazel build -c opt //cli:peerkv
peerkv=${PEERKV:-./bazel-bin/cli/peerkv}
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
declare -A pid
"$peerkv" serve --data "$work/checked" --listen 127.0.0.1:0 >"$work/checked.log" 2>&1 &
pid[checked]=$!
pids+=($!)
"$peerkv" serve --data "$work/plain" --listen 127.0.0.1:0 --no-access-checks >"$work/plain.log" 2>&1 &
pid[plain]=$!
pids+=($!)
for s in checked plain; do
  for _ in $(seq 100); do grep -q "listening on" "$work/$s.log" && break; sleep 0.1; done
done
# The server's user + system CPU so far, in clock ticks (fields 14 and 15
# of /proc/PID/stat; the command name, field 2, holds no spaces here).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
echo "== peerkv bench -c 50 -n $requests, $rounds rounds ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
: >"$work/cpu"
for round in $(seq "$rounds"); do
  order="plain checked"
  [ $((round % 2)) -eq 0 ] && order="checked plain"
  for t in put get; do
    for s in $order; do
      before=$(cpu_ticks "${pid[$s]}")
      line=$("$peerkv" --server "unix:$work/$s/peerkv.sock" bench -c 50 -n "$requests" -t "$t")
      after=$(cpu_ticks "${pid[$s]}")
      us=$(awk -v b="$before" -v a="$after" -v hz="$hz" -v n="$requests" \
        'BEGIN { printf "%.2f", (a - b) * 1e6 / hz / n }')
      echo "$round $t $s $us" >>"$work/cpu"
      echo "round $round $s: $line; server CPU $us us/request (load $(cut -d' ' -f1 /proc/loadavg))"
    done
  done
done
for t in put get; do
  awk -v t="$t" '$2 == t { cpu[$1, $3] = $4; if ($1 > n) n = $1 }
    END { for (r = 1; r <= n; r++) print cpu[r, "checked"] / cpu[r, "plain"] }' "$work/cpu" |
    sort -g | awk -v t="$t" '{ v[NR] = $1 }
      END {
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%s: checked / unchecked server CPU per request: median %.3f, range %.3f-%.3f over %d rounds\n",
          toupper(t), m, v[1], v[NR], NR
      }'
done
