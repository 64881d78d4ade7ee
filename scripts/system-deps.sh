#!/usr/bin/env bash
# The system tools tako's tests and benchmarks run for real, installed through apt when
# missing and run as root: `scripts/system-deps.sh [tool ...]` (default: what the test
# suite needs, redis-server and nginx; `make bench` adds wrk).
set -euo pipefail
tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(redis-server nginx)
missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "tako needs: ${missing[*]} (install them, e.g. apt-get install -y ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
# Debian starts packaged services on install; the tests and benchmarks start their own on
# free ports.
service nginx stop >/dev/null 2>&1 || true
service redis-server stop >/dev/null 2>&1 || true
