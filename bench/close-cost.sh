#!/bin/bash
# Server CPU spent closing N idle sessions at once: start `holdfast serve --shards 2`, open N
# sessions with `holdfast-bench connect`, SIGKILL the client (the kernel sends every FIN at
# once), and read the server's utime+stime (/proc/PID/stat, 10 ms ticks) before and after the
# last connection is gone. Usage: bench/close-cost.sh [SESSIONS] [PORT]
# Needs a release build: cargo build --release -p holdfast-server -p holdfast-bench
set -euo pipefail
N=${1:-30000}
PORT=${2:-7992}
cd "$(dirname "$0")/.."
target/release/holdfast serve --listen 127.0.0.1:"$PORT" --shards 2 >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
sleep 1
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
established() { ss -Htn state established "( sport = :$PORT )" | wc -l; }
target/release/holdfast-bench connect --target 127.0.0.1:"$PORT" --sessions "$N" \
    --connect-rate-per-s 30000 --duration-s 60 >/dev/null 2>&1 &
CLIENT=$!
for _ in $(seq 1 200); do [ "$(established)" -ge "$N" ] && break; sleep 0.1; done
sleep 0.5
before=$(cpu_ticks)
kill -9 "$CLIENT"
wait "$CLIENT" 2>/dev/null || true
for _ in $(seq 1 400); do [ "$(established)" -eq 0 ] && break; sleep 0.05; done
sleep 0.5
after=$(cpu_ticks)
ticks=$((after - before))
echo "sessions $N: closing them took $((ticks * 10)) ms of server CPU" \
    "($(( ticks * 10000000 / N )) ns per close)"
