#!/usr/bin/env bash
# bench/run_http_bench.sh: builds with -c opt, starts one server (store in
# /var/tmp, on disk) with RPC and HTTP (--http-insecure-loopback), and in
# the same run measures: Cap'n Proto GET with `peerkv bench` (the
# baseline), HTTP GET with //bench:http_bench (50 keep-alive clients,
# 100-byte values), and the SSE write-to-event latency. Stops the server
# by its PID.
# Usage: bench/run_http_bench.sh [-n REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${2:-200000}
bazel build -c opt //cli:peerkv //bench:http_bench
dir=$(mktemp -d /var/tmp/peerkv-http-bench.XXXXXX)
log="$dir/log"
./bazel-bin/cli/peerkv serve --data "$dir/data" --listen 127.0.0.1:0 \
  --insecure-loopback --http-listen 127.0.0.1:0 --http-insecure-loopback 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 300); do
  grep -q "listening on" "$log" && break
  sleep 0.1
done
rpc=$(sed -n 's/.*listening on \([0-9.:]*\),.*/\1/p' "$log")
http=$(sed -n 's|.*HTTP on http://\([0-9.:]*\)/.*|\1|p' "$log")
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  host: $(nproc) cpu"
./bazel-bin/cli/peerkv --server "$rpc" bench -t put -c 50 -n 10000 -d 100 -r 10000 >/dev/null
rpc_line=$(./bazel-bin/cli/peerkv --server "$rpc" bench -t get -c 50 -n "$n" -d 100 -r 10000)
echo "RPC  $rpc_line"
http_out=$(./bazel-bin/bench/http_bench "$http" -c 50 -n "$n" -r 10000 -d 100 --sse 500)
echo "$http_out"
rpc_rps=$(echo "$rpc_line" | grep -o '[0-9.]* requests per second' | cut -d' ' -f1)
http_rps=$(echo "$http_out" | grep -o 'HTTP GET: [0-9.]*' | cut -d' ' -f3)
python3 -c "print('HTTP GET / RPC GET = %.2fx' % ($http_rps / $rpc_rps))"
