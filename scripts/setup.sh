#!/usr/bin/env bash
# scripts/setup.sh: installs the Debian packages peerkv builds and tests
# with, and skips apt entirely when all of them are already installed.
# Usage: scripts/setup.sh [extra-package...]   (run as root, or with sudo)
set -euo pipefail

packages=(
  bazel-bootstrap
  g++
  make
  libabsl-dev
  liblmdb-dev
  lmdb-utils
  capnproto
  libcapnp-dev
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  libssl-dev
  # etcd 3.4 (etcd, etcdctl): the consensus backend's tests and benchmark
  # start a real etcd on loopback.
  etcd-server
  etcd-client
  libsodium-dev
  # The HTTP front end's process tests (tests/http): curl, Debian's python3
  # with its Prometheus text-format parser, and headless chromium for the
  # status page.
  curl
  python3
  python3-prometheus-client
  chromium
  # redis-cli, redis-benchmark and redis-py: the RESP front end's process
  # tests drive a real server with them (tests/resp_test.cc).
  redis-tools
  python3-redis
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
