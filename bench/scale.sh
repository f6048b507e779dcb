#!/usr/bin/env bash
# One `holdfast serve` (shards = cores) holding N idle sessions (Hello, then heartbeats) from
# `holdfast-bench connect` worker processes on many 127.0.0.x source addresses, and what it
# costs. Prints one `key value` line per figure and keeps every report in $OUT:
#
#   connects_per_s             sessions opened / setup time (client report)
#   listen_overflows           TcpExtListenOverflows + TcpExtListenDrops during the fill
#   server_rss_per_session_b   server VmRSS delta / N (client report, 1 s after all are open)
#   server_slab_per_session_b  kernel slab, server's share of the socket rows + io_kiocb
#   slab_per_session_b         /proc/meminfo Slab delta / N: client and server ends, all caches
#   idle_cpu_ms_per_s          server CPU (utime+stime) per second while N are held and idle:
#                              heartbeats (client Pings answered) and timer sweeps
#   echo_p99_us_none/_held     P99 of 1,000 echo sessions at ECHO_RATE_PER_S in all (open
#                              loop), median of ECHO_RUNS runs: _none on this server before the
#                              fill; then, while N are held, runs alternate between a second
#                              server with the same config holding none (_none_alt) and this
#                              one (_held), so both see the same background load;
#                              echo_held_over_none is the median of those pairs' ratios
#   leave_s                    the hold ends (every worker closes its sessions at once):
#                              from the first closes the server sees until it counts 0 open
#   rss_after_leave_b          server VmRSS once all have left (and its delta from start)
#   drain_s                    (DRAIN=1) N held again, SIGTERM until the server has exited
#
#   bench/scale.sh N            e.g. bench/scale.sh 1000000
#
# Loopback only, bounded: the fill gives up after SETUP_TIMEOUT_S, the hold ends after HOLD_S,
# and the server is killed on exit. Needs root (/proc/slabinfo), a release build
# (cargo build --release -p holdfast-server -p holdfast-bench), jq and nstat.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/scripts/lib.sh

N=${1:?usage: bench/scale.sh SESSIONS}
# NETNS_EHASH_ENTRIES=K: run everything (both servers, the clients) in a network namespace made
# for the run, whose TCP established-connection hash table has K buckets. The host namespace's
# table is sized at boot (`sysctl net.ipv4.tcp_ehash_entries`: 262,144 here); the 2M loopback
# sockets of 1M sessions (both ends) make its chains ~8 long, and every segment's lookup walks
# one (__inet_lookup_established: 20% of the server's CPU in the 1M heartbeat wave). A host
# holding 1M sessions sets the boot parameter thash_entries instead (tuning/README.md).
NETNS_EHASH_ENTRIES=${NETNS_EHASH_ENTRIES:-0}
if [ "$NETNS_EHASH_ENTRIES" != 0 ] && [ -z "${SCALE_NETNS:-}" ]; then
    ns=holdfast-scale-$$
    child_before=$(sysctl -n net.ipv4.tcp_child_ehash_entries)
    # Read by the kernel only when a namespace is created: set, create, put back.
    sysctl -qw net.ipv4.tcp_child_ehash_entries="$NETNS_EHASH_ENTRIES"
    created=0
    ip netns add "$ns" && created=1
    sysctl -qw net.ipv4.tcp_child_ehash_entries="$child_before"
    ((created)) || exit 1
    rc=0
    ip netns exec "$ns" ip link set lo up &&
        SCALE_NETNS=$ns ip netns exec "$ns" "$PWD/bench/scale.sh" "$@" || rc=$?
    ip netns del "$ns"
    exit "$rc"
fi
HOLDFAST=${HOLDFAST:-target/release/holdfast}
BENCH=${BENCH:-target/release/holdfast-bench}
PORT=${PORT:-17996}
ADMIN_PORT=${ADMIN_PORT:-17997}
# The second server (same config, none held) the held echo runs alternate with.
BASELINE_PORT=${BASELINE_PORT:-$((PORT + 2))}
BASELINE_ADMIN_PORT=${BASELINE_ADMIN_PORT:-$((ADMIN_PORT + 2))}
SHARDS=${SHARDS:-$(nproc)}
# SO_REUSEPORT does not split exactly evenly: 15% headroom per shard.
PER_SHARD=${PER_SHARD:-$((N / SHARDS * 115 / 100 + 1000))}
CONNECT_RATE_PER_S=${CONNECT_RATE_PER_S:-25000}
SESSIONS_PER_WORKER=${SESSIONS_PER_WORKER:-15000}
WORKERS=$(((N + SESSIONS_PER_WORKER - 1) / SESSIONS_PER_WORKER))
LISTEN_BACKLOG=$(cat /proc/sys/net/core/somaxconn)
# Connects in flight in all workers at most half the shards' accept queues (listen_backlog,
# capped at net.core.somaxconn): more overflowed them at 1M (TcpExtListenOverflows 204,558,
# clients timing out in the handshake while the server starved).
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-$((SHARDS * LISTEN_BACKLOG / 2 / WORKERS + 1))}
# The server's heartbeat_interval_ms (default 15 s) and heartbeat_timeout_ms (default 3x the
# interval): each idle session costs one heartbeat (a Ping and its Pong) per interval, ~10 us
# of server CPU each on loopback, so the default interval at 1M is ~67k heartbeats/s, most of
# two cores (docs/CAPACITY.md). The clients Ping at the same interval (the server, whose sweep
# runs a little faster, is first almost always).
HEARTBEAT_INTERVAL_MS=${HEARTBEAT_INTERVAL_MS:-15000}
HEARTBEAT_TIMEOUT_MS=${HEARTBEAT_TIMEOUT_MS:-$((HEARTBEAT_INTERVAL_MS * 3))}
PING_INTERVAL_MS=${PING_INTERVAL_MS:-$HEARTBEAT_INTERVAL_MS}
# The server's hello_timeout_ms (default 5 s): a connection that sends no Hello in time is closed.
HELLO_TIMEOUT_MS=${HELLO_TIMEOUT_MS:-5000}
SETUP_TIMEOUT_S=${SETUP_TIMEOUT_S:-240}
# The idle CPU window covers a whole heartbeat interval (at least 30 s): every held session has
# its heartbeat in it once, however the fill bunched their deadlines.
IDLE_CPU_WINDOW_S=${IDLE_CPU_WINDOW_S:-$(((HEARTBEAT_INTERVAL_MS + 999) / 1000 > 30 ? (HEARTBEAT_INTERVAL_MS + 999) / 1000 : 30))}
ECHO_SESSIONS=${ECHO_SESSIONS:-1000}
ECHO_RUNS=${ECHO_RUNS:-3}
ECHO_S=${ECHO_S:-5}
# Open loop (latency from each frame's intended send time), well below what the 2 cores serve:
# a saturated closed loop would measure queueing, not the cost of the idle sessions held.
ECHO_RATE_PER_S=${ECHO_RATE_PER_S:-10000}
# The hold (from all open): the slab settle, the idle window and the alternating echo runs (each
# up to ~ECHO_S + 10 s with its own setup at 1M), then 20 s to spare.
HOLD_S=${HOLD_S:-$((3 + IDLE_CPU_WINDOW_S + 2 * ECHO_RUNS * (ECHO_S + 10) + 20))}
DRAIN=${DRAIN:-0}
LEAVE_SETTLE_S=${LEAVE_SETTLE_S:-20}
OUT=${OUT:-target/bench/scale-$N}
mkdir -p "$OUT"

baseline=""
# lib.sh's cleanup kills $server and the $bench process group.
trap 'cleanup; [ -n "$baseline" ] && kill -9 "$baseline" 2>/dev/null; true' EXIT

say() { printf '%s %s\n' "$1" "$2" | tee -a "$OUT/summary.txt"; }
rss_bytes() { echo $(($(awk '/^VmRSS:/ {print $2}' "/proc/$server/status") * 1024)); }
slab_bytes() { echo $(($(awk '/^Slab:/ {print $2}' /proc/meminfo) * 1024)); }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
overflows() { nstat -az TcpExtListenOverflows TcpExtListenDrops | awk 'NR > 1 { s += $2 } END { print s + 0 }'; }
echo_run() { # echo_run LABEL PORT: one echo run; prints its P99 (us)
    nice -n 5 "$BENCH" rate --target "127.0.0.1:$2" --sessions "$ECHO_SESSIONS" \
        --rate-per-s "$ECHO_RATE_PER_S" --duration-s "$ECHO_S" --warmup-s 1 \
        --label "$1" --out "$OUT" >"$OUT/$1.out" 2>&1
    jq '.histograms[.main_histogram].p99_us' "$OUT/$1.json"
}
echo_p99() { # echo_p99 LABEL: median P99 of ECHO_RUNS runs on this server
    for run in $(seq "$ECHO_RUNS"); do echo_run "$1-$run" "$PORT"; done | median
}
wait_open() { # wait_open WANT LIMIT_S: until the server counts WANT open (or the limit passes)
    local deadline=$((SECONDS + $2))
    while (($(metric holdfast_connections_open) != $1)) && ((SECONDS < deadline)); do sleep 0.5; done
}

launch_server() { # launch_server NAME PORT ADMIN_PORT: starts one, its pid in $launched
    HOLDFAST_LISTEN_BACKLOG=$LISTEN_BACKLOG HOLDFAST_ADMIN_LISTEN=127.0.0.1:$3 \
        HOLDFAST_HEARTBEAT_INTERVAL_MS=$HEARTBEAT_INTERVAL_MS HOLDFAST_HEARTBEAT_TIMEOUT_MS=$HEARTBEAT_TIMEOUT_MS \
        HOLDFAST_HELLO_TIMEOUT_MS=$HELLO_TIMEOUT_MS "$HOLDFAST" serve --listen "127.0.0.1:$2" \
        --shards "$SHARDS" --max-connections-per-shard "$PER_SHARD" \
        >"$OUT/$1.out" 2>"$OUT/$1.err" &
    launched=$!
    for _ in $(seq 100); do grep -q listening "$OUT/$1.out" 2>/dev/null && break; sleep 0.1; done
    sleep 1
}
start_server() {
    launch_server server "$PORT" "$ADMIN_PORT"
    server=$launched
}

fill() { # fill LABEL: N sessions held for HOLD_S in the background; returns once all are open
    local label=$1
    # Its own process group (setsid), so cleanup stops every worker; nice 19, so dozens of
    # workers do not starve the server's two pinned threads.
    setsid nice -n 19 "$BENCH" connect --target "127.0.0.1:$PORT" --sessions "$N" \
        --sessions-per-worker "$SESSIONS_PER_WORKER" --connect-rate-per-s "$CONNECT_RATE_PER_S" \
        --connect-concurrency "$CONNECT_CONCURRENCY" --handshake-timeout-ms 30000 \
        --setup-timeout-s "$SETUP_TIMEOUT_S" --duration-s "$HOLD_S" --server-pid "$server" \
        --ping-interval-ms "$PING_INTERVAL_MS" \
        --label "$label" --out "$OUT" >"$OUT/$label.out" 2>&1 &
    bench=$!
    # Until N are open, or the count stood still for 20 s (connects that failed), or the
    # setup limit passed.
    local deadline=$((SECONDS + SETUP_TIMEOUT_S + 10)) last=-1 still=0 open
    while ((SECONDS < deadline)) && ((still < 20)); do
        kill -0 "$bench" 2>/dev/null || break
        open=$(metric holdfast_connections_open)
        ((open >= N)) && break
        if ((open == last)); then still=$((still + 1)); else still=0; fi
        last=$open
        sleep 1
    done
}

start_server
launch_server baseline "$BASELINE_PORT" "$BASELINE_ADMIN_PORT"
baseline=$launched
say sessions_planned "$N"
say shards "$SHARDS"
say netns "${SCALE_NETNS:-host}"
say tcp_ehash_entries "$(sysctl -n net.ipv4.tcp_ehash_entries)"
say max_connections_per_shard "$PER_SHARD"
say connect_concurrency_per_worker "$CONNECT_CONCURRENCY"
say heartbeat_interval_ms "$HEARTBEAT_INTERVAL_MS"
say heartbeat_timeout_ms "$HEARTBEAT_TIMEOUT_MS"
say hello_timeout_ms "$HELLO_TIMEOUT_MS"
say idle_cpu_window_s "$IDLE_CPU_WINDOW_S"
say load_average_start "$(cut -d' ' -f1-3 /proc/loadavg)"
rss_start=$(rss_bytes)
say server_rss_start_b "$rss_start"

say echo_p99_us_none "$(echo_p99 echo-none)"

slab_before=$(slab_bytes)
overflows_before=$(overflows)
fill connect
say sessions_open "$(metric holdfast_connections_open)"
say listen_overflows "$(($(overflows) - overflows_before))"
sleep 3
open=$(metric holdfast_connections_open)
say slab_per_session_b "$((($(slab_bytes) - slab_before) / open))"

# Every second while held: a shard that did not answer the admin's stats request within 1 s
# (holdfast_shard_up 0) was stalled that long.
(while kill -0 "$server" 2>/dev/null; do
    printf '%s %s\n' "$(date +%T)" "$(curl -s -m 3 "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk '/^holdfast_shard_up/ { s = s $2 } /^holdfast_connections_open/ { o += $2 }
            END { printf "up=%s open=%d", s, o }')"
    sleep 1
done >"$OUT/shard-up.txt") &
watcher=$!
ticks_before=$(cpu_ticks)
frames_before=$(metric holdfast_frames_received_total)
pings_before=$(metric holdfast_heartbeat_pings_sent_total)
sleep "$IDLE_CPU_WINDOW_S"
ticks=$(($(cpu_ticks) - ticks_before))
frames=$(($(metric holdfast_frames_received_total) - frames_before))
# 100 ticks per second: 10 ms of CPU each.
say idle_cpu_ms_per_s "$((ticks * 10 / IDLE_CPU_WINDOW_S))"
say frames_received_per_s "$((frames / IDLE_CPU_WINDOW_S))"
say server_pings_per_s "$((($(metric holdfast_heartbeat_pings_sent_total) - pings_before) / IDLE_CPU_WINDOW_S))"
# Server CPU per frame received (a heartbeat is one frame in: a Pong or the client's Ping).
say idle_cpu_us_per_frame "$((frames > 0 ? ticks * 10000 / frames : 0))"
say sessions_open_after_idle "$(metric holdfast_connections_open)"

# Alternating pairs: none held (the second server), then N held (this one).
: >"$OUT/echo-pairs.txt"
for run in $(seq "$ECHO_RUNS"); do
    none=$(echo_run "echo-none-alt-$run" "$BASELINE_PORT")
    held=$(echo_run "echo-held-$run" "$PORT")
    echo "$none $held" >>"$OUT/echo-pairs.txt"
done
say echo_p99_us_none_alt "$(awk '{ print $1 }' "$OUT/echo-pairs.txt" | median)"
say echo_p99_us_held "$(awk '{ print $2 }' "$OUT/echo-pairs.txt" | median)"
say echo_held_over_none "$(awk '{ printf "%.2f\n", $2 / $1 }' "$OUT/echo-pairs.txt" | median)"
say echo_p50_us_none_alt_held "$(for f in "$OUT"/echo-none-alt-*.json; do jq '.histograms[.main_histogram].p50_us' "$f"; done | median) $(for f in "$OUT"/echo-held-*.json; do jq '.histograms[.main_histogram].p50_us' "$f"; done | median)"
say load_average_held "$(cut -d' ' -f1-3 /proc/loadavg)"
say server_rss_held_b "$(rss_bytes)"
smaps_classes "$server" >"$OUT/smaps-held.txt"
# Why the server closed connections so far (hello_timeout, heartbeat_timeout: clients too
# starved to keep up); the echo runs' own sessions, closed by the client, are among peer_eof.
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk '/^holdfast_connections_closed_total/ {
            match($1, /reason="[a-z_]+"/); n[substr($1, RSTART + 8, RLENGTH - 9)] += $2 }
        END { for (k in n) if (n[k] > 0) printf "closed_%s %d\n", k, n[k] }' |
    sort | tee -a "$OUT/summary.txt"

# The hold ends: every worker closes its sessions at once. From the first closes seen until
# the server counts none open.
held=$(metric holdfast_connections_open)
deadline=$((SECONDS + HOLD_S + 60))
while (($(metric holdfast_connections_open) > held * 99 / 100)) && ((SECONDS < deadline)); do sleep 0.2; done
leave_start=$(date +%s.%N)
wait_open 0 120
say leave_s "$(echo "$(date +%s.%N) - $leave_start" | bc)"
wait "$bench" || true
bench=""
json="$OUT/connect.json"
say sessions_opened "$(jq '.counters.sessions_opened // .sessions_planned' "$json")"
say setup_ms "$(jq .setup_ms "$json")"
say connects_per_s "$(jq '(.counters.sessions_opened // .sessions_planned) / (.setup_ms / 1000) | floor' "$json")"
say connect_errors "$(jq .errors_total "$json")"
say server_rss_per_session_b "$(jq '.server_memory.rss_bytes_per_session | floor' "$json")"
say server_slab_per_session_b "$(jq '.server_memory.server_slab_bytes_per_session | floor' "$json")"
say io_kiocb_per_session_b "$(jq '.server_memory.io_kiocb_bytes_per_session | floor' "$json")"

sleep 2
say rss_after_leave_b "$(rss_bytes)"
say rss_after_leave_delta_b "$(($(rss_bytes) - rss_start))"
smaps_classes "$server" >"$OUT/smaps-left.txt"
# Once the shards gave back what the leave's bursts grew (trim once a second).
sleep "$LEAVE_SETTLE_S"
say rss_after_leave_settled_delta_b "$(($(rss_bytes) - rss_start))"
smaps_classes "$server" >"$OUT/smaps-left-settled.txt"

if [ "$DRAIN" = 1 ]; then
    HOLD_S=$((SETUP_TIMEOUT_S + 60)) fill connect-drain
    say drain_sessions "$(metric holdfast_connections_open)"
    drain_start=$(date +%s.%N)
    kill -TERM "$server"
    wait "$server" || true
    server=""
    say drain_s "$(echo "$(date +%s.%N) - $drain_start" | bc)"
fi
kill "$watcher" 2>/dev/null || true
say shard_stalls_over_1s "$(grep -c 'up=[01]*0' "$OUT/shard-up.txt" || true)"
say load_average_end "$(cut -d' ' -f1-3 /proc/loadavg)"
