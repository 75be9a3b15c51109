#!/usr/bin/env bash
# Debian packages the test suite uses: JUnit 4, Gson and SQLite JDBC for the Java bridge's host tests; WordNet for METEOR.
# Idempotent; needs root (or sudo) for apt-get. Without them the Java tests and METEOR report themselves unavailable/skipped.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq --no-install-recommends junit4 libgoogle-gson-java libxerial-sqlite-jdbc-java >/dev/null
fi
for extra in "$here"/install-wordnet.sh "$here"/install-java-deps.sh; do
  if [ -f "$extra" ]; then bash "$extra"; fi
done
