#!/usr/bin/env bash
# System packages the test suite runs for real: redis-server, nginx, wrk (bench only).
set -euo pipefail
missing=()
for tool in redis-server nginx; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "tako tests need: ${missing[*]} (install them, e.g. apt-get install -y ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
# Debian starts packaged services on install; the tests start their own on free ports.
service nginx stop >/dev/null 2>&1 || true
