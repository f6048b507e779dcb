#!/usr/bin/env bash
# Idle bytes and session setups per server CPU-second, per transport.
#
# For each of tcp, tls, ws and wss: starts a fresh `holdfast serve` (one shard) with its plain,
# TLS and WebSocket listeners, opens SESSIONS idle sessions over that transport with
# `holdfast-bench connect --server-pid` and reads two figures from its report: the server's RSS
# growth per open session (user memory: session state, TLS keys, buffers), and sessions set up
# per server CPU-second (accept, TLS or WebSocket handshake, Hello/Welcome). tls is also run
# against the tokio-rustls baseline, ws and wss against tokio-tungstenite. RUNS runs each;
# prints every run and the median.
#
#   bench/scripts/transport-idle.sh [SESSIONS=2000] [RUNS=3]
#
# Binaries: BIN_DIR (default target/release) with holdfast, holdfast-bench and the baselines.
# Loopback only, one server at a time, bounded by SESSIONS and the connect workload's timeouts.
set -euo pipefail

SESSIONS=${1:-2000}
RUNS=${2:-3}
BIN_DIR=${BIN_DIR:-target/release}
PORT_BASE=${PORT_BASE:-18600}
HOLD_S=${HOLD_S:-2}
WORK=$(mktemp -d)
trap 'kill "${SERVER_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

for bin in holdfast holdfast-bench holdfast-baseline-tokio-rustls holdfast-baseline-tokio-tungstenite; do
    [[ -x "$BIN_DIR/$bin" ]] || { echo "$BIN_DIR/$bin missing: cargo build --release -p holdfast-server -p holdfast-bench" >&2; exit 2; }
done

# A self-signed certificate for localhost, made for this run (never kept).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null

port=$PORT_BASE
wait_listen() { # port
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

start_server() { # server transport port
    local server=$1 transport=$2 p=$3
    case $server in
    holdfast)
        cat >"$WORK/holdfast.toml" <<TOML
listen = "127.0.0.1:$((p + 1000))"
admin_listen = "127.0.0.1:$((p + 2000))"
shards = 1
tls_listen = "127.0.0.1:$p"
tls_cert_file = "$WORK/cert.pem"
tls_key_file = "$WORK/key.pem"
ws_listen = "127.0.0.1:$((p + 3000))"
ws_path = "/ws"
TOML
        "$BIN_DIR/holdfast" serve --config "$WORK/holdfast.toml" >"$WORK/server.log" 2>&1 &
        SERVER_PID=$!
        case $transport in
        tcp) TARGET=127.0.0.1:$((p + 1000)) ;;
        tls | wss) TARGET=127.0.0.1:$p ;;
        ws) TARGET=127.0.0.1:$((p + 3000)) ;;
        esac
        ;;
    tokio-rustls)
        "$BIN_DIR/holdfast-baseline-tokio-rustls" --listen "127.0.0.1:$p" --cores 1 \
            --cert "$WORK/cert.pem" --key "$WORK/key.pem" >"$WORK/server.log" 2>&1 &
        SERVER_PID=$!
        TARGET=127.0.0.1:$p
        ;;
    tokio-tungstenite)
        local tls=()
        [[ $transport == wss ]] && tls=(--cert "$WORK/cert.pem" --key "$WORK/key.pem")
        "$BIN_DIR/holdfast-baseline-tokio-tungstenite" --listen "127.0.0.1:$p" --cores 1 \
            "${tls[@]}" >"$WORK/server.log" 2>&1 &
        SERVER_PID=$!
        TARGET=127.0.0.1:$p
        ;;
    esac
    wait_listen "${TARGET##*:}"
    sleep 0.3 # the listen probe's connection is gone before the baseline snapshot
}

measure() { # server transport -> prints "rss_bytes_per_session setups_per_server_cpu_s"
    local server=$1 transport=$2
    port=$((port + 1))
    start_server "$server" "$transport" "$port"
    "$BIN_DIR/holdfast-bench" connect --transport "$transport" --target "$TARGET" \
        --tls-ca "$WORK/cert.pem" --ws-path /ws --sessions "$SESSIONS" --connect-concurrency 200 \
        --warmup-s 0 --duration-s "$HOLD_S" --server-pid "$SERVER_PID" \
        --out "$WORK/out" --label run >"$WORK/bench.log" 2>&1 || { cat "$WORK/bench.log" >&2; exit 1; }
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    python3 - "$WORK/out/run.json" "$SESSIONS" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
m = s["server_memory"]
opened = s["counters"]["sessions_opened"]
assert opened == int(sys.argv[2]), f"{opened} of {sys.argv[2]} sessions opened: {s['counters']['connect_failed']}"
print(f"{m['rss_bytes_per_session']:.0f} {m['setups_per_server_cpu_s'] or 0:.0f}")
PY
}

median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

echo "sessions $SESSIONS, runs $RUNS, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| transport | server | idle RSS B/session (median) | session setups per server CPU-s (median) | runs (B/session, setups/CPU-s) |\n|---|---|---|---|---|\n'
for pair in tcp:holdfast tls:holdfast tls:tokio-rustls ws:holdfast ws:tokio-tungstenite wss:holdfast wss:tokio-tungstenite; do
    transport=${pair%%:*}
    server=${pair#*:}
    results=()
    for _ in $(seq 1 "$RUNS"); do
        results+=("$(measure "$server" "$transport")")
    done
    rss=$(printf '%s\n' "${results[@]}" | cut -d' ' -f1 | median)
    rate=$(printf '%s\n' "${results[@]}" | cut -d' ' -f2 | median)
    printf '| %s | %s | %s | %s | %s |\n' "$transport" "$server" "$rss" "$rate" "$(IFS=';'; echo "${results[*]}")"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
