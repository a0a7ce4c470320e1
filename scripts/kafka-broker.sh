#!/usr/bin/env bash
# A real Apache Kafka broker on loopback, for tests, benchmarks and trying
# eddy out:
#
#   scripts/kafka-broker.sh start DIR   # prints 127.0.0.1:PORT as its first line
#   scripts/kafka-broker.sh stop DIR    # stops it and waits for the process to end
#
# `start` fetches the broker's jars through Maven (scripts/kafka/pom.xml; the
# local Maven repository caches the download, so only the first run on a
# machine reaches Maven Central) into KAFKA_JARS, formats a single-node KRaft
# storage in DIR (broker and controller in one JVM), starts the broker on a
# free loopback port, waits until it answers a metadata request, and prints
# its bootstrap address.  Its data, config, log (DIR/broker.log), pid and
# address (DIR/broker.addr) live in DIR.  `start` on a DIR whose broker runs
# prints that broker's address again.  Exit status 1 with the reason on
# stderr when the jars cannot be fetched or the broker does not answer.
#
# Why Kafka 3.9: eddy talks to Kafka through librdkafka, and Debian 12's is
# 2.0.2.  Kafka 4.0 removed the old protocol versions (KIP-896: Produce v0-2,
# Fetch v0-3, OffsetCommit v0-1, ...) and ZooKeeper; librdkafka 2.0.2 picks
# the newest version both sides support (ApiVersions), which 4.x still
# serves for most requests, but 3.9.x is the last line that keeps every
# version librdkafka 2.0.2 may pick, and it runs KRaft, so no ZooKeeper.
#
# The settings make transactions and consumer groups work on one node: the
# offsets topic and the transaction state log have replication factor 1
# (min ISR 1) and few partitions, a group's first rebalance is not delayed,
# sessions may be as short as 1 s (the specs use 3-4 s), segments are
# small, and nothing is deleted by age (log.retention.ms=-1): eddy's Kafka
# sinks stamp records with their event time, and the specs' event times lie
# years back, so time retention would delete their segments within minutes.  The heap is modest (KAFKA_HEAP, -Xmx512m): CI has 2 cores.
#
#   KAFKA_JARS   where the jars are copied (default build/kafka-VERSION)
#   KAFKA_HEAP   the JVM's heap options (default "-Xms256m -Xmx512m")
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
POM=$ROOT/scripts/kafka/pom.xml
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
KAFKA_JARS=${KAFKA_JARS:-$ROOT/build/kafka-$VERSION}
KAFKA_HEAP=${KAFKA_HEAP:-"-Xms256m -Xmx512m"}

die() { echo "kafka-broker: $*" >&2; exit 1; }
usage() { die "usage: $0 start DIR | stop DIR"; }

[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)

# alive PID: the process runs and is our broker (not a reused pid)
alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "kafka.Kafka $DIR/"
}

# jars: fetches the broker's jars once; later runs find them in KAFKA_JARS
jars() {
    [ -f "$KAFKA_JARS/.complete" ] && return 0
    command -v java >/dev/null || die "java is not installed (scripts/install-deps.sh installs it)"
    command -v mvn >/dev/null || die "mvn is not installed (scripts/install-deps.sh installs it)"
    rm -rf "$KAFKA_JARS"
    mkdir -p "$KAFKA_JARS"
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$KAFKA_JARS" \
            >"$KAFKA_JARS/mvn.log" 2>&1; then
        tail -n 20 "$KAFKA_JARS/mvn.log" >&2
        die "could not fetch Apache Kafka $VERSION through Maven (the log above, all of it in $KAFKA_JARS/mvn.log)"
    fi
    touch "$KAFKA_JARS/.complete"
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# java_args: the JVM's command line before the main class
java_args() {
    # shellcheck disable=SC2086  # the heap options are words
    JAVA=(java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
          -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -Dorg.slf4j.simpleLogger.showDateTime=true
          -cp "$KAFKA_JARS/*")
}

start() {
    local pid
    pid=$(cat "$DIR/broker.pid" 2>/dev/null || true)
    if alive "$pid" && [ -f "$DIR/broker.addr" ]; then
        cat "$DIR/broker.addr"
        return 0
    fi
    jars
    local port cport
    port=$(free_port)
    cport=$(free_port)
    while [ "$cport" = "$port" ]; do cport=$(free_port); done
    rm -rf "$DIR/data" "$DIR/broker.addr"
    cat >"$DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
min.insync.replicas=1
default.replication.factor=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
num.network.threads=2
num.io.threads=4
background.threads=4
log.segment.bytes=16777216
offsets.topic.segment.bytes=16777216
transaction.state.log.segment.bytes=16777216
log.cleaner.dedupe.buffer.size=16777216
log.cleaner.threads=1
log.flush.interval.ms=9223372036854775807
log.retention.ms=-1
EOF
    # a cluster id as Kafka writes one (16 random bytes, base64url, never
    # starting with "-": StorageTool's argument parser would take it for an
    # option, as Kafka's own Uuid.randomUuid knows — one start in 64 failed
    # so); saves `StorageTool random-uuid` a JVM start
    local uuid
    uuid=$(python3 -c 'import base64, os
while True:
    u = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not u.startswith("-"):
        break
print(u)')
    java_args
    : >"$DIR/format.log"
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$uuid" -c "$DIR/server.properties" >>"$DIR/format.log" 2>&1 ||
        die "could not format the KRaft storage in $DIR/data: $(cat "$DIR/format.log")"
    # a session of its own: a SIGINT to the terminal or the test runner's
    # process group does not reach it; `stop` does
    setsid "${JAVA[@]}" kafka.Kafka "$DIR/server.properties" </dev/null >"$DIR/broker.log" 2>&1 &
    pid=$!
    echo "$pid" >"$DIR/broker.pid"
    local addr=127.0.0.1:$port
    local deadline=$((SECONDS + 90))
    until timeout 10 kcat -L -b "$addr" -m 5 >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$DIR/broker.log" >&2
            die "the broker exited before it answered (the log above, all of it in $DIR/broker.log)"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 30 "$DIR/broker.log" >&2
            kill -KILL "$pid" 2>/dev/null || true
            die "the broker did not answer on $addr within 90 s (the log above, all of it in $DIR/broker.log)"
        fi
        sleep 0.5
    done
    echo "$addr" >"$DIR/broker.addr"
    echo "$addr"
}

stop() {
    local pid
    pid=$(cat "$DIR/broker.pid" 2>/dev/null || true)
    if ! alive "$pid"; then rm -f "$DIR/broker.pid" "$DIR/broker.addr"; return 0; fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            echo "kafka-broker: the broker (pid $pid) did not stop within 60 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.2
    done
    rm -f "$DIR/broker.pid" "$DIR/broker.addr"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
