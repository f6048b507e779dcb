#!/usr/bin/env bash
# Echo P99 of ECHO_SESSIONS active sessions with none held, then with N idle sessions held
# (Hello, then only heartbeats at the default intervals), on the same server, for one or more
# server builds in turn.
#
# For each run and each binary: a fresh `holdfast serve --shards SHARDS`; ECHO_RUNS echo runs
# with nothing else connected; N idle sessions opened by `holdfast-bench connect` workers
# (nice 5, their own process group; they Ping every PING_INTERVAL_MS, the server's default
# heartbeat_interval_ms, and answer the server's Pings); SETTLE_S for the connect burst to pass
# and the heartbeats to spread over their interval; ECHO_RUNS echo runs again. Each echo run is
# `holdfast-bench rate`: ECHO_SESSIONS sessions sending Echo frames at ECHO_RATE_PER_S in all,
# open loop (latency from each frame's intended send time, so a stall is counted for every
# frame it delays), ECHO_S seconds after a 1 s warm-up. Prints one line per binary and run with
# the medians of its echo runs, then the median over runs:
#
#   label run p50_none_us p99_none_us p50_held_us p99_held_us held_over_none open load
#
#   bench/scripts/echo-among-idle.sh N LABEL=BIN_DIR [LABEL=BIN_DIR ...]
#   e.g. bench/scripts/echo-among-idle.sh 100000 old=/tmp/old new=target/release
#
# Loopback only, bounded: the fill gives up after SETUP_TIMEOUT_S, the idle sessions are held
# for a fixed time and every process is stopped at the end of its run.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/scripts/lib.sh

N=${1:?usage: bench/scripts/echo-among-idle.sh SESSIONS LABEL=BIN_DIR...}
shift
(($# > 0)) || { echo "name at least one LABEL=BIN_DIR" >&2; exit 2; }
RUNS=${RUNS:-1}
ECHO_RUNS=${ECHO_RUNS:-3}
ECHO_SESSIONS=${ECHO_SESSIONS:-1000}
ECHO_RATE_PER_S=${ECHO_RATE_PER_S:-10000}
ECHO_S=${ECHO_S:-5}
SHARDS=${SHARDS:-$(nproc)}
PORT=${PORT:-17796}
ADMIN_PORT=${ADMIN_PORT:-17797}
SETTLE_S=${SETTLE_S:-20}
SETUP_TIMEOUT_S=${SETUP_TIMEOUT_S:-120}
PING_INTERVAL_MS=${PING_INTERVAL_MS:-15000}
SESSIONS_PER_WORKER=${SESSIONS_PER_WORKER:-15000}
CONNECT_RATE_PER_S=${CONNECT_RATE_PER_S:-20000}
PER_SHARD=$(((N + ECHO_SESSIONS) / SHARDS * 115 / 100 + 1000))
OUT=${OUT:-target/bench/echo-among-idle-$N}
mkdir -p "$OUT"
# Long enough for the fill, the settling and every held echo run (each ~ECHO_S + setup).
HOLD_S=$((SETUP_TIMEOUT_S + SETTLE_S + ECHO_RUNS * (ECHO_S + 20) + 30))

trap cleanup EXIT # lib.sh: kills $server and the $bench process group


echo_runs() { # echo_runs DIR LABEL: "p50 p99", medians over ECHO_RUNS runs
    local dir=$1 label=$2 p50s=() p99s=() json
    for i in $(seq "$ECHO_RUNS"); do
        nice -n 5 "$dir/holdfast-bench" rate --target "127.0.0.1:$PORT" --sessions "$ECHO_SESSIONS" \
            --rate-per-s "$ECHO_RATE_PER_S" --duration-s "$ECHO_S" --warmup-s 1 \
            --label "$label-$i" --out "$OUT" >"$OUT/$label-$i.out" 2>&1 || true
        json="$OUT/$label-$i.json"
        p50s+=("$(jq '.histograms[.main_histogram].p50_us' "$json")")
        p99s+=("$(jq '.histograms[.main_histogram].p99_us' "$json")")
    done
    echo "$(printf '%s\n' "${p50s[@]}" | median) $(printf '%s\n' "${p99s[@]}" | median)"
}

one_run() { # one_run LABEL BIN_DIR RUN: prints the run's line
    local label=$1 dir=$2 run=$3
    HOLDFAST_ADMIN_LISTEN=127.0.0.1:$ADMIN_PORT "$dir/holdfast" serve --listen "127.0.0.1:$PORT" \
        --shards "$SHARDS" --max-connections-per-shard "$PER_SHARD" \
        >"$OUT/$label-$run.server.out" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q listening "$OUT/$label-$run.server.out" 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
    local none held
    none=$(echo_runs "$dir" "$label-$run-none")
    setsid nice -n 5 "$dir/holdfast-bench" connect --target "127.0.0.1:$PORT" --sessions "$N" \
        --sessions-per-worker "$SESSIONS_PER_WORKER" --connect-rate-per-s "$CONNECT_RATE_PER_S" \
        --setup-timeout-s "$SETUP_TIMEOUT_S" --duration-s "$HOLD_S" \
        --ping-interval-ms "$PING_INTERVAL_MS" \
        --label "$label-$run-idle" --out "$OUT" >"$OUT/$label-$run-idle.out" 2>&1 &
    bench=$!
    local deadline=$((SECONDS + SETUP_TIMEOUT_S + 10))
    while (($(metric holdfast_connections_open) < N)) && ((SECONDS < deadline)); do sleep 1; done
    sleep "$SETTLE_S"
    local open
    open=$(metric holdfast_connections_open)
    held=$(echo_runs "$dir" "$label-$run-held")
    kill -- -"$bench" 2>/dev/null || true
    wait "$bench" 2>/dev/null || true
    bench=""
    kill -9 "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
    read -r p50n p99n <<<"$none"
    read -r p50h p99h <<<"$held"
    local ratio
    ratio=$(awk -v h="$p99h" -v n="$p99n" 'BEGIN { printf "%.2f", (n > 0 ? h / n : 0) }')
    echo "$label $run $p50n $p99n $p50h $p99h $ratio open=$open load=$(cut -d' ' -f1 /proc/loadavg)"
    sleep 2
}

echo "label run p50_none_us p99_none_us p50_held_us p99_held_us held_over_none" | tee "$OUT/runs.txt"
for run in $(seq "$RUNS"); do
    for pair in "$@"; do
        one_run "${pair%%=*}" "${pair#*=}" "$run" | tee -a "$OUT/runs.txt"
    done
done
echo "median: label p99_none_us p99_held_us held_over_none"
for pair in "$@"; do
    label=${pair%%=*}
    col() { awk -v l="$label" -v c="$1" 'NR > 1 && $1 == l { print $c }' "$OUT/runs.txt" | median; }
    echo "median $label $(col 4) $(col 6) $(col 7)" | tee -a "$OUT/runs.txt"
done
