#!/usr/bin/env bash
# Server CPU per second spent on N idle sessions (Hello, then only heartbeats at the default
# intervals), split into user and kernel time, for one or more server builds in turn.
#
# For each run and each binary: a fresh `holdfast serve --shards SHARDS`, N sessions opened by
# `holdfast-bench connect` workers (which Ping every PING_INTERVAL_MS, the server's default
# heartbeat_interval_ms, and answer the server's Pings), SETTLE_S for the connect burst to pass
# and the first heartbeats to spread, then WINDOW_S over which it reads the server's utime and
# stime (/proc/PID/stat), frames received and the server's own heartbeat Pings (/metrics).
# Prints one line per run and binary, then the median per binary:
#
#   label run user_ms_per_s sys_ms_per_s cpu_ms_per_s frames_in_per_s server_pings_per_s us_per_frame
#       anon_b_per_session file_b_per_session open load
#
# (anon/file: the server's RssAnon and RssFile growth from its start to the end of the window,
# per session open: user memory, and the ring and buffer pages mapped from the kernel.)
#
#   bench/scripts/idle-cpu.sh N LABEL=BIN_DIR [LABEL=BIN_DIR ...]
#   e.g. bench/scripts/idle-cpu.sh 100000 old=/tmp/old new=target/release
#
# Binaries alternate within each run (old, new, old, new, ...), so the machine's load drifts
# over both alike. PERF=1 also records `perf record -e cpu-clock -g` of the server over the
# window into $OUT/LABEL-RUN.perf.data. Loopback only, bounded: the fill gives up after
# SETUP_TIMEOUT_S and every process is stopped at the end of its run.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/scripts/lib.sh

N=${1:?usage: bench/scripts/idle-cpu.sh SESSIONS LABEL=BIN_DIR...}
shift
(($# > 0)) || { echo "name at least one LABEL=BIN_DIR" >&2; exit 2; }
RUNS=${RUNS:-3}
SHARDS=${SHARDS:-$(nproc)}
PORT=${PORT:-17896}
ADMIN_PORT=${ADMIN_PORT:-17897}
SETTLE_S=${SETTLE_S:-20}
WINDOW_S=${WINDOW_S:-20}
SETUP_TIMEOUT_S=${SETUP_TIMEOUT_S:-120}
PING_INTERVAL_MS=${PING_INTERVAL_MS:-15000}
SESSIONS_PER_WORKER=${SESSIONS_PER_WORKER:-15000}
CONNECT_RATE_PER_S=${CONNECT_RATE_PER_S:-20000}
PER_SHARD=$((N / SHARDS * 115 / 100 + 1000))
PERF=${PERF:-0}
OUT=${OUT:-target/bench/idle-cpu-$N}
mkdir -p "$OUT"
HOLD_S=$((SETUP_TIMEOUT_S + SETTLE_S + WINDOW_S + 10))
TICKS_PER_S=$(getconf CLK_TCK)

trap cleanup EXIT # lib.sh: kills $server and the $bench process group

rss_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$server/status"; }

one_run() { # one_run LABEL BIN_DIR RUN: prints the run's line
    local label=$1 dir=$2 run=$3
    HOLDFAST_ADMIN_LISTEN=127.0.0.1:$ADMIN_PORT "$dir/holdfast" serve --listen "127.0.0.1:$PORT" \
        --shards "$SHARDS" --max-connections-per-shard "$PER_SHARD" \
        >"$OUT/$label-$run.server.out" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q listening "$OUT/$label-$run.server.out" 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
    local anon0 file0
    anon0=$(rss_kib RssAnon)
    file0=$(rss_kib RssFile)
    setsid nice -n 5 "$dir/holdfast-bench" connect --target "127.0.0.1:$PORT" --sessions "$N" \
        --sessions-per-worker "$SESSIONS_PER_WORKER" --connect-rate-per-s "$CONNECT_RATE_PER_S" \
        --setup-timeout-s "$SETUP_TIMEOUT_S" --duration-s "$HOLD_S" \
        --ping-interval-ms "$PING_INTERVAL_MS" \
        --label "$label-$run" --out "$OUT" >"$OUT/$label-$run.connect.out" 2>&1 &
    bench=$!
    local deadline=$((SECONDS + SETUP_TIMEOUT_S + 10))
    while (($(metric holdfast_connections_open) < N)) && ((SECONDS < deadline)); do sleep 1; done
    sleep "$SETTLE_S"
    local stat0 stat1 frames0 pings0 perf=""
    stat0=$(awk '{print $14, $15}' "/proc/$server/stat")
    frames0=$(metric holdfast_frames_received_total)
    pings0=$(metric holdfast_heartbeat_pings_sent_total)
    if [ "$PERF" = 1 ]; then
        perf record -e cpu-clock -g -p "$server" -o "$OUT/$label-$run.perf.data" -- sleep "$WINDOW_S" \
            >/dev/null 2>&1 &
        perf=$!
    fi
    sleep "$WINDOW_S"
    stat1=$(awk '{print $14, $15}' "/proc/$server/stat")
    local frames pings open
    frames=$(($(metric holdfast_frames_received_total) - frames0))
    pings=$(($(metric holdfast_heartbeat_pings_sent_total) - pings0))
    open=$(metric holdfast_connections_open)
    local anon=$((($(rss_kib RssAnon) - anon0) * 1024 / (open > 0 ? open : 1)))
    local file=$((($(rss_kib RssFile) - file0) * 1024 / (open > 0 ? open : 1)))
    [ -n "$perf" ] && wait "$perf" || true
    kill -- -"$bench" 2>/dev/null || true
    wait "$bench" 2>/dev/null || true
    bench=""
    kill -9 "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
    # user, sys in clock ticks -> ms per second of window
    read -r u0 s0 <<<"$stat0"
    read -r u1 s1 <<<"$stat1"
    local user=$(((u1 - u0) * 1000 / TICKS_PER_S / WINDOW_S))
    local sys=$(((s1 - s0) * 1000 / TICKS_PER_S / WINDOW_S))
    local cpu=$((user + sys))
    local fps=$((frames / WINDOW_S))
    local us_per_frame="-"
    ((frames > 0)) && us_per_frame=$(((user + sys) * 1000 * WINDOW_S / frames))
    echo "$label $run $user $sys $cpu $fps $((pings / WINDOW_S)) $us_per_frame $anon $file open=$open load=$(cut -d' ' -f1 /proc/loadavg)"
    sleep 2
}

echo "label run user_ms_per_s sys_ms_per_s cpu_ms_per_s frames_in_per_s server_pings_per_s us_per_frame anon_b_per_session file_b_per_session" | tee "$OUT/runs.txt"
for run in $(seq "$RUNS"); do
    for pair in "$@"; do
        one_run "${pair%%=*}" "${pair#*=}" "$run" | tee -a "$OUT/runs.txt"
    done
done
echo "median: label user_ms_per_s sys_ms_per_s cpu_ms_per_s us_per_frame"
for pair in "$@"; do
    label=${pair%%=*}
    col() { awk -v l="$label" -v c="$1" 'NR > 1 && $1 == l { print $c }' "$OUT/runs.txt" | median; }
    echo "median $label $(col 3) $(col 4) $(col 5) $(col 8)" | tee -a "$OUT/runs.txt"
done
