#!/usr/bin/env bash
# bench/run_tls_bench.sh: what TLS costs (bench/README.md, "TLS"), -c opt,
# all in one run:
#   1. `peerkv bench` GET and PUT against one server over its Unix socket,
#      over TLS (a client device of the server's user), and against a
#      second server with --insecure-loopback (plaintext TCP, the old path);
#   2. the handshake + first answer of a reconnecting client
#      (//bench:tls_handshake_bench);
#   3. a fresh replica pulling N records (default 1,000,000) over TLS and
#      over plaintext in the same process, each against raw LMDB puts
#      (//bench:converge_bench --pull-only --tls both).
# Usage: bench/run_tls_bench.sh [records] [bench requests]
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-1000000}
requests=${2:-200000}
bazel build -c opt //cli:peerkv //bench:tls_handshake_bench //bench:converge_bench
# The -c opt output itself, not ./bazel-bin: a fastbuild in this worktree
# while the script runs repoints that link.
bin=$(bazel info -c opt bazel-bin)
peerkv=$bin/cli/peerkv
work=$(mktemp -d /var/tmp/peerkv-tls-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A server and a client device of its user.
"$peerkv" --data "$work/server" init --user bench >/dev/null
user=$("$peerkv" --data "$work/server" id | awk '/^user/ {print $2}')
client=$("$peerkv" --data "$work/client" init --join "$user" | awk '/^device/ {print $2}')
"$peerkv" --data "$work/server" device add "$client" --name bench-client >/dev/null
"$peerkv" serve --data "$work/server" --listen 127.0.0.1:0 >"$work/server.log" 2>&1 &
pids+=($!)
"$peerkv" serve --data "$work/plain" --listen 127.0.0.1:0 --insecure-loopback >"$work/plain.log" 2>&1 &
pids+=($!)
addr() { for _ in $(seq 100); do a=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$1"); [ -n "$a" ] && { echo "$a"; return; }; sleep 0.1; done; exit 1; }
tls_addr=$(addr "$work/server.log")
plain_addr=$(addr "$work/plain.log")
# A user's load: 50 clients, one request in flight each, 100-byte values.
load=(bench -c 50 -n "$requests" -d 100 -r 100000 -t put,get)
echo "== peerkv ${load[*]} ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
rate() { awk -v op="$1" '$1 == op ":" {print $2}'; }
for round in 1 2; do
  echo "-- round $round: plaintext TCP (--insecure-loopback)"
  plain=$("$peerkv" --server "$plain_addr" "${load[@]}")
  echo "$plain"
  echo "-- round $round: Unix socket"
  local_out=$("$peerkv" --server "unix:$work/server/peerkv.sock" "${load[@]}")
  echo "$local_out"
  echo "-- round $round: TLS 1.3"
  tls=$("$peerkv" --identity "$work/client" --server "$tls_addr" "${load[@]}")
  echo "$tls"
  for op in PUT GET; do
    awk -v op="$op" -v p="$(echo "$plain" | rate "$op")" -v u="$(echo "$local_out" | rate "$op")" \
        -v t="$(echo "$tls" | rate "$op")" \
        'BEGIN {printf "   %s: Unix / plaintext %.2f (>= 1.0), TLS / plaintext %.2f (>= 0.8)\n", op, u / p, t / p}'
  done
done
echo "== handshake"
"$bin/bench/tls_handshake_bench" 500
echo "== fresh pull of $records records"
"$bin/bench/converge_bench" --pull-only --pull-records "$records" --pull-orders random \
  --pull-repeats 1 --tls both --out "$work/out"
