#!/usr/bin/env bash
# The system tools a benchmark drives, installed through apt when missing and run as root:
#   bench/system-deps.sh nginx wrk redis-server
# redis-server is not needed when REDIS_URL names a server.
set -euo pipefail
missing=()
for tool in "$@"; do
  [ "$tool" = redis-server ] && [ -n "${REDIS_URL:-}" ] && continue
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "this benchmark needs: ${missing[*]} (e.g. apt-get install -y ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
# Debian starts packaged services on install; the benchmarks start their own on free ports.
service nginx stop >/dev/null 2>&1 || true
service redis-server stop >/dev/null 2>&1 || true
