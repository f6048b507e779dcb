#!/usr/bin/env bash
# Echo throughput and latency of one or more server builds in the same run, alternating:
# each round starts a fresh `holdfast serve --shards SHARDS` per build (extra server config
# through HOLDFAST_* variables in SERVER_ENV, e.g. SERVER_ENV="HOLDFAST_RING_MAX_FIXED_FILES=256
# HOLDFAST_MAX_CONNECTIONS_PER_SHARD=7000" for a shard of many rings), runs
# `holdfast-bench echo --sessions SESSIONS --inflight 1` against it, and stops it. Prints one
# line per round and build, then the medians per build:
#
#   label round replies_per_s p50_us p99_us load
#
#   bench/scripts/echo-ab.sh LABEL=BIN_DIR [LABEL=BIN_DIR ...]
#   e.g. ROUNDS=5 bench/scripts/echo-ab.sh base=/tmp/base new=target/release
#
# Loopback only; each run is bounded by WARMUP_S + DURATION_S.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/scripts/lib.sh

(($# > 0)) || { echo "usage: bench/scripts/echo-ab.sh LABEL=BIN_DIR..." >&2; exit 2; }
ROUNDS=${ROUNDS:-5}
SHARDS=${SHARDS:-$(nproc)}
SESSIONS=${SESSIONS:-1000}
WARMUP_S=${WARMUP_S:-1}
DURATION_S=${DURATION_S:-5}
PORT=${PORT:-17846}
ADMIN_PORT=${ADMIN_PORT:-17847}
SERVER_ENV=${SERVER_ENV:-}
OUT=${OUT:-target/bench/echo-ab}
mkdir -p "$OUT"

server=""
cleanup() { [ -n "$server" ] && kill -9 "$server" 2>/dev/null || true; }
trap cleanup EXIT

one_run() { # one_run LABEL BIN_DIR ROUND: prints the run's line
    local label=$1 dir=$2 round=$3
    # shellcheck disable=SC2086 # SERVER_ENV is a list of NAME=VALUE words
    env $SERVER_ENV HOLDFAST_ADMIN_LISTEN=127.0.0.1:$ADMIN_PORT "$dir/holdfast" serve \
        --listen "127.0.0.1:$PORT" --shards "$SHARDS" >"$OUT/$label-$round.server.out" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q listening "$OUT/$label-$round.server.out" 2>/dev/null && break; sleep 0.1; done
    "$dir/holdfast-bench" echo --target "127.0.0.1:$PORT" --sessions "$SESSIONS" --inflight 1 \
        --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" --out "$OUT" --label "$label-$round" \
        >"$OUT/$label-$round.out" 2>&1
    kill -9 "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
    local json="$OUT/$label-$round.json"
    echo "$label $round $(jq -r '[(.replies_per_s | floor), .histograms.latency.p50_us, .histograms.latency.p99_us] | @tsv' "$json" | tr '\t' ' ') $(cut -d' ' -f1 /proc/loadavg)"
}

echo "label round replies_per_s p50_us p99_us load" | tee "$OUT/runs.txt"
for round in $(seq "$ROUNDS"); do
    for pair in "$@"; do
        one_run "${pair%%=*}" "${pair#*=}" "$round" | tee -a "$OUT/runs.txt"
    done
done
for pair in "$@"; do
    label=${pair%%=*}
    col() { awk -v l="$label" -v c="$1" 'NR > 1 && $1 == l { print $c }' "$OUT/runs.txt" | median; }
    echo "median $label replies_per_s $(col 3) p50_us $(col 4) p99_us $(col 5)" | tee -a "$OUT/runs.txt"
done
