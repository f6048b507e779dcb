#!/usr/bin/env bash
# Where the server's resident memory goes as idle sessions come and go, by kind of mapping
# (lib.sh, smaps_classes): io_uring SQ/CQ rings and SQE arrays, the heap (mimalloc's
# anonymous mappings), the binary. For each session count N given: a fresh `holdfast serve`,
# a snapshot at start, N sessions opened by `holdfast-bench connect` workers (Hello, then
# heartbeats), a snapshot SETTLE_S after all are open, every session closed at once, a
# snapshot SETTLE_S after the server counts none open. Prints per class:
#
#   N class start_kib held_kib left_kib held_b_per_session left_minus_start_kib
#
# then, with two counts or more, the per-session slope of each class (least squares of the
# held - start growth over the sessions held: what one more session adds, without the fixed
# costs of a fill), and keeps each snapshot's /proc/PID/smaps in $OUT. LEAVE_SETTLE_S (default
# SETTLE_S) is the wait after all left: the timer wheel drops closed sessions' entries only as
# they come due (up to heartbeat_timeout_ms), the burst queues within a second (shard/trim.rs).
#
# The 1M shape without 1M sessions: RING_TABLE (the config key ring_max_fixed_files) caps each
# ring's fixed-file table, and every shard is given RINGS rings' worth of slots, so a few
# thousand sessions run on as many rings per shard as 1M did on this host (RLIMIT_NOFILE
# 20,000: 29 rings per shard). RING_TABLE=20000 RINGS=... with N up to 100,000 is the real
# table size.
#
#   bench/scripts/memory.sh N [N ...]      e.g. bench/scripts/memory.sh 5000 30000 55000
#
# Loopback only, bounded: the fill gives up after SETUP_TIMEOUT_S; the server and the workers
# are stopped at the end of each count. Needs a release build
# (cargo build --release -p holdfast-server -p holdfast-bench) and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/scripts/lib.sh

(($# > 0)) || { echo "usage: bench/scripts/memory.sh SESSIONS [SESSIONS ...]" >&2; exit 2; }
BIN_DIR=${BIN_DIR:-target/release}
SHARDS=${SHARDS:-$(nproc)}
PORT=${PORT:-17796}
ADMIN_PORT=${ADMIN_PORT:-17797}
RING_TABLE=${RING_TABLE:-1000}
RINGS=${RINGS:-29}
# Session slots per shard: the last of RINGS rings is partly filled (SERVER_FULL_REFUSAL_SLOTS,
# 64, refusal slots follow the sessions).
PER_SHARD=${PER_SHARD:-$((RINGS * RING_TABLE - RING_TABLE / 2))}
SETTLE_S=${SETTLE_S:-5}
LEAVE_SETTLE_S=${LEAVE_SETTLE_S:-$SETTLE_S}
SETUP_TIMEOUT_S=${SETUP_TIMEOUT_S:-120}
SESSIONS_PER_WORKER=${SESSIONS_PER_WORKER:-15000}
CONNECT_RATE_PER_S=${CONNECT_RATE_PER_S:-20000}
PING_INTERVAL_MS=${PING_INTERVAL_MS:-15000}
OUT=${OUT:-target/bench/memory}
mkdir -p "$OUT"

trap cleanup EXIT # lib.sh: kills $server and the $bench process group

wait_open() { # wait_open CMP WANT LIMIT_S: until the open count CMP (-ge, -eq) WANT
    local deadline=$((SECONDS + $3))
    while ! [ "$(metric holdfast_connections_open)" "$1" "$2" ] && ((SECONDS < deadline)); do
        sleep 0.5
    done
}

snapshot() { # snapshot N LABEL: smaps classes into $OUT/N-LABEL.classes
    cp "/proc/$server/smaps" "$OUT/$1-$2.smaps"
    smaps_classes "$server" >"$OUT/$1-$2.classes"
    echo "total $(status_kib "$server" VmRSS) -" >>"$OUT/$1-$2.classes"
}

one_count() { # one_count N
    local n=$1
    HOLDFAST_RING_MAX_FIXED_FILES=$RING_TABLE HOLDFAST_ADMIN_LISTEN=127.0.0.1:$ADMIN_PORT \
        "$BIN_DIR/holdfast" serve --listen "127.0.0.1:$PORT" --shards "$SHARDS" \
        --max-connections-per-shard "$PER_SHARD" >"$OUT/$n.server.out" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q listening "$OUT/$n.server.out" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    snapshot "$n" start
    setsid nice -n 5 "$BIN_DIR/holdfast-bench" connect --target "127.0.0.1:$PORT" --sessions "$n" \
        --sessions-per-worker "$SESSIONS_PER_WORKER" --connect-rate-per-s "$CONNECT_RATE_PER_S" \
        --setup-timeout-s "$SETUP_TIMEOUT_S" --duration-s $((SETUP_TIMEOUT_S + 3600)) \
        --ping-interval-ms "$PING_INTERVAL_MS" \
        --label "connect-$n" --out "$OUT" >"$OUT/$n.connect.out" 2>&1 &
    bench=$!
    wait_open -ge "$n" $((SETUP_TIMEOUT_S + 10))
    sleep "$SETTLE_S"
    local held
    held=$(metric holdfast_connections_open)
    snapshot "$n" held
    kill -- -"$bench" 2>/dev/null || true
    wait "$bench" 2>/dev/null || true
    bench=""
    wait_open -eq 0 60
    sleep "$LEAVE_SETTLE_S"
    snapshot "$n" left
    echo "# N=$n held=$held left_open=$(metric holdfast_connections_open)" \
        "rings_per_shard=$RINGS ring_table=$RING_TABLE shards=$SHARDS load=$(cut -d' ' -f1 /proc/loadavg)"
    join <(sort "$OUT/$n-start.classes") <(sort "$OUT/$n-held.classes") |
        join - <(sort "$OUT/$n-left.classes") |
        awk -v n="$n" -v held="$held" '{
            printf "%s %s %d %d %d %d %d\n", n, $1, $2, $4, $6,
                ($4 - $2) * 1024 / (held > 0 ? held : 1), $6 - $2 }'
    kill -9 "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
    sleep 2
}

echo "N class start_kib held_kib left_kib held_b_per_session left_minus_start_kib"
: >"$OUT/runs.txt"
for n in "$@"; do
    one_count "$n" | tee -a "$OUT/runs.txt"
done
if (($# > 1)); then
    echo "slope class b_per_session (least squares over the counts held)"
    awk '/^# N=/ { split($3, h, "="); held = h[2]; next }
        { x = held; y = ($4 - $3) * 1024; c = $2
          n[c]++; sx[c] += x; sy[c] += y; sxx[c] += x * x; sxy[c] += x * y }
        END { for (c in n) if (n[c] > 1) {
                  d = n[c] * sxx[c] - sx[c] * sx[c]
                  printf "slope %s %.1f\n", c, d ? (n[c] * sxy[c] - sx[c] * sy[c]) / d : 0 } }
    ' "$OUT/runs.txt" | sort -k2 | tee -a "$OUT/runs.txt"
fi
