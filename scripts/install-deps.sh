#!/bin/sh
# Installs the Debian packages that eddy's build, examples, tests and
# benchmark need.  Idempotent: asks dpkg first, and touches apt only when
# something is missing.  Silent when everything is already installed.
set -eu

PKGS="build-essential pkg-config clang libclang-rt-dev
      libluajit-5.1-dev luajit
      librdkafka-dev librocksdb-dev libevent-dev libmsgpack-dev libjansson-dev libcsv-dev uthash-dev libssl-dev
      rapidjson-dev libdouble-conversion-dev libsimdjson-dev
      lua-busted lua-cjson
      kcat curl python3 python3-confluent-kafka procps time valgrind"

missing=""
for p in $PKGS; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *" ok installed") ;;
        *) missing="$missing $p" ;;
    esac
done
# Java and Maven run the real Kafka broker of the tests (scripts/kafka-broker.sh)
# and the benchmark peers; any JRE >= 11 will do, so ask for the commands
command -v java >/dev/null 2>&1 || missing="$missing default-jre-headless"
command -v mvn >/dev/null 2>&1 || missing="$missing maven"
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-deps: missing packages:$missing (not root and no sudo; install them by hand)" >&2
        exit 1
    fi
fi

echo "install-deps: installing$missing"
$SUDO apt-get update
# shellcheck disable=SC2086  # word splitting of the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
