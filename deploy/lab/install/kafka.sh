#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars (KRaft) and their runtime dependencies from Maven Central into
# a per-version cache outside the repository. Idempotent: a cache holding the marker file is
# complete and is not touched again.
#
#   deploy/lab/install/kafka.sh              resolve what is missing, print the libs directory last
#   deploy/lab/install/kafka.sh --print-dir  only print the libs directory
#
# The version is pinned in deploy/kafka/pom.xml (kafka.version); KAFKA_VERSION below and
# deploy/lab/kafka.py must name the same one.
set -euo pipefail

KAFKA_VERSION=4.4.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$(cd "$here/../../kafka" && pwd)/pom.xml"
cache="${SFOPS_CACHE:-$HOME/.cache/sfops}"
libs="$cache/kafka-$KAFKA_VERSION/libs"
# The marker also records the POM's hash, so editing the POM (a new logging binding, say)
# re-resolves instead of silently keeping an older set of jars.
marker="$libs/.complete"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$libs"
  exit 0
fi

pom_hash="$(sha256sum "$pom" | cut -d' ' -f1)"
if [[ -f "$marker" && "$(cat "$marker")" == "$pom_hash" ]]; then
  echo "[kafka] $KAFKA_VERSION jars cached ($(ls "$libs"/*.jar | wc -l) jars)"
  echo "$libs"
  exit 0
fi

# Maven (and a JDK >= 17 for the brokers) from Debian when the machine lacks them.
if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "kafka.sh: mvn or java not found; as root: apt-get install maven openjdk-17-jre-headless" >&2
    exit 1
  fi
  echo "[kafka] apt-get install maven openjdk-17-jre-headless ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    maven openjdk-17-jre-headless >/dev/null
fi
if ! grep -q "<kafka.version>$KAFKA_VERSION</kafka.version>" "$pom"; then
  echo "kafka.sh: $pom does not pin kafka.version $KAFKA_VERSION" >&2
  exit 1
fi

start=$(date +%s)
echo "[kafka] resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION and runtime deps from Maven Central ..."
# Resolve into a temporary directory and rename it, so an interrupted run never leaves a libs
# directory that looks complete.
tmp="$cache/kafka-$KAFKA_VERSION/.libs.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
# (Maven 3.8 prints bare colour resets even in quiet batch mode; strip them.)
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$tmp" | sed 's/\x1b\[[0-9;]*m//g'
for required in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar" log4j-core-; do
  if ! ls "$tmp" | grep -q "^$required"; then
    echo "kafka.sh: resolution finished without $required" >&2
    exit 1
  fi
done
echo "$pom_hash" >"$tmp/.complete"
rm -rf "$libs"
mv "$tmp" "$libs"
trap - EXIT
echo "[kafka] $(ls "$libs"/*.jar | wc -l) jars, $(du -sh "$libs" | cut -f1) in $libs ($(( $(date +%s) - start ))s)"
echo "$libs"
