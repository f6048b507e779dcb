#!/usr/bin/env bash
# Drain one of two hosts in JetStream cluster mode and count every push (issue 15):
# a nats-server -js, host B started here, host A started (and SIGTERMed, then restarted) by
# `holdfast-bench storm --storm-mode goodbye --resume`. Both hosts listen on the same port
# (SO_REUSEPORT), so the kernel spreads new connections over them as a load balancer would:
# sessions on A follow their Goodbye and land on B (or on A once it is back).
#
#   BIN_DIR=target/release bench/scripts/cluster-drain-resume.sh SESSIONS [RUNS]
#
# Prints storm's report per run (published, delivered, lost, duplicated, time until every
# session is back). Loopback only; everything it starts is stopped on exit.
# storm publishes through A's admin listener (it waits for it after the restart), so while A
# is away its publishes are refused and retried; sessions on B keep their connections.
set -euo pipefail

SESSIONS=${1:?usage: cluster-drain-resume.sh SESSIONS [RUNS]}
RUNS=${2:-1}
BIN_DIR=${BIN_DIR:-target/release}
TOPICS=${TOPICS:-4}
RATE=${RATE:-20}
HOLD_S=${HOLD_S:-5}
DURATION_S=${DURATION_S:-12}
PORT=${PORT:-17978}
NATS_PORT=${NATS_PORT:-14222}
ADMIN_A=127.0.0.1:${ADMIN_A_PORT:-19978}
ADMIN_B=127.0.0.1:${ADMIN_B_PORT:-19979}

NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

host_config() { # id admin
    cat <<TOML
listen = "127.0.0.1:$PORT"
admin_listen = "$2"
shards = 2
nats_url = "nats://127.0.0.1:$NATS_PORT"
cluster_host_id = "$1"
cluster_mode = "jetstream"
reconnect_after_ms = 500
reconnect_jitter_ms = 1000
history_max_messages = 4096
TOML
}

for run in $(seq 1 "$RUNS"); do
    rm -rf "$WORK/nats" && mkdir -p "$WORK/nats"
    "$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/nats" >/dev/null 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    for _ in $(seq 1 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT) 2>/dev/null && break
        sleep 0.05
    done
    host_config a "$ADMIN_A" >"$WORK/a.toml"
    host_config b "$ADMIN_B" >"$WORK/b.toml"
    "$BIN_DIR/holdfast" serve --config "$WORK/b.toml" >"$WORK/b.log" 2>&1 &
    B_PID=$!
    PIDS+=("$B_PID")
    for _ in $(seq 1 100); do
        curl -sf "http://$ADMIN_B/healthz" >/dev/null && break
        sleep 0.05
    done
    echo "run $run/$RUNS: $SESSIONS sessions, load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$BIN_DIR/holdfast-bench" storm --storm-mode goodbye --resume --sessions "$SESSIONS" \
        --resume-topics "$TOPICS" --rate-per-s "$RATE" --hold-s "$HOLD_S" \
        --duration-s "$DURATION_S" --drain-ms 5000 \
        --target "127.0.0.1:$PORT" --admin "$ADMIN_A" \
        --server-bin "$BIN_DIR/holdfast" --server-config "$WORK/a.toml" \
        --out "$WORK/storm-$run.json"
    kill "$B_PID" "$NATS_PID" 2>/dev/null || true
    wait "$B_PID" "$NATS_PID" 2>/dev/null || true
done
