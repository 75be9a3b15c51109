#!/usr/bin/env bash
# Installs the Debian packages the Android bridge's host tests need: a JDK with its C headers (javac, jni.h), g++ (the
# tests compile the vendored ONNX Runtime GenAI Java API's JNI layer against the onnxruntime-genai wheel), JUnit 4
# (+ hamcrest), Gson and Xerial's SQLite JDBC driver (with its JNI library). Idempotent: does nothing when present.
set -euo pipefail

need=()
[ -f /usr/share/java/junit4.jar ] || need+=(junit4)
[ -f /usr/share/java/gson.jar ] || need+=(libgoogle-gson-java)
[ -f /usr/share/java/sqlite-jdbc.jar ] || need+=(libxerial-sqlite-jdbc-java)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v g++ >/dev/null 2>&1 || need+=(g++)

if [ ${#need[@]} -eq 0 ]; then
  echo "java test deps: already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
echo "java test deps: installed ${need[*]}"
