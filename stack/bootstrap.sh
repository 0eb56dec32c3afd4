#!/usr/bin/env bash
# System packages the stack needs: Java 17 (Kafka 4, Cassandra 5.0), Maven (fetches their jars
# from Maven Central), PostgreSQL and Redis servers, Python >= 3.11 with venv, and Chromium for
# the tracking page's browser test.
# Installed with apt-get when running as root; otherwise named exactly, and we stop.
set -euo pipefail
missing=()
ls /usr/lib/jvm/*17*/bin/java >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# the tracking page's browser test drives Debian's Chromium through Playwright
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# promtool validates the alert rules (config/prometheus/)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
PY=${PYTHON:-python3}
"$PY" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || missing+=(python3 python3-venv)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages; install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system cluster/server on install; the project runs its own under .stack/.
if [[ " ${missing[*]} " == *" postgresql "* ]]; then service postgresql stop >/dev/null 2>&1 || true; fi
if [[ " ${missing[*]} " == *" redis-server "* ]]; then service redis-server stop >/dev/null 2>&1 || true; fi
exit 0
