#!/usr/bin/env bash
# Cost of the eBPF probes: echo round trips per server CPU-second of `holdfast serve --shards 1`
# with and without --probes, measured by holdfast-bench echo (1000 sessions, INFLIGHT in flight (default 1), 64-byte
# frames, 2 s warm-up, 8 s window). Off and on alternate (order swapped every round) with one
# server alive at a time, so the probes of one run never run during another. Needs root for
# --probes. Build first: cargo build --release -p holdfast-server -p holdfast-bench
#   ROUNDS=5 INFLIGHT=1 docs/observability/probe-overhead.sh
set -euo pipefail
R=${R:-target/release}
OUT=${OUT:-target/bench/probe-overhead}
ROUNDS=${ROUNDS:-5}
INFLIGHT=${INFLIGHT:-1}
mkdir -p "$OUT"
run() { # mode round
    local flags=""; [[ $1 == probes ]] && flags="--probes"
    $R/holdfast serve --listen 127.0.0.1:17811 --admin-listen 127.0.0.1:17812 --shards 1 $flags > "$OUT/$1-$2.server.out" 2> "$OUT/$1-$2.server.err" &
    local pid=$!
    for _ in $(seq 100); do # up to 10 s for the listening line
        grep -q "holdfast listening" "$OUT/$1-$2.server.out" 2>/dev/null && break
        sleep 0.1
    done
    grep -q "holdfast listening" "$OUT/$1-$2.server.out" || { cat "$OUT/$1-$2.server.err" >&2; return 1; }
    $R/holdfast-bench echo --target 127.0.0.1:17811 --sessions 1000 --inflight "$INFLIGHT" --warmup-s 2 --duration-s 8 \
        --server-pid $pid --out "$OUT" --label "$1-$2" > "$OUT/$1-$2.txt" 2>/dev/null
    kill -TERM $pid 2>/dev/null || echo "$1 round $2: server $pid was gone before the window ended (signalled from outside?)"
    wait $pid || true
    grep "^server:" "$OUT/$1-$2.txt" | sed "s/^/$1 round $2: /"
}
# A measurement whose server died early has no server line: remove it and measure again.
measure() {
    for attempt in 1 2 3; do
        run "$1" "$2" && return 0
        rm -f "$OUT/$1-$2".*
    done
    return 1
}
for i in $(seq "$ROUNDS"); do
    if (( i % 2 )); then measure off $i; measure probes $i; else measure probes $i; measure off $i; fi
done
python3 - "$OUT" <<'PY'
import json, glob, statistics, sys
out = sys.argv[1]
def medians(mode):
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{mode}-*.json"))]
    server = [r["server_cpu"]["round_trips_per_cpu_s"] for r in runs]
    client = [r["replies_per_client_cpu_s"] for r in runs]
    print(f"{mode:6} round trips per server CPU-s: median {statistics.median(server):.0f} "
          f"runs {sorted(round(x) for x in server)}; replies per client CPU-s: median {statistics.median(client):.0f}")
    return statistics.median(server), statistics.median(client)
off, on = medians("off"), medians("probes")
print(f"probes cost {100 * (1 - on[0] / off[0]):.1f}% of round trips per server CPU-second "
      f"({100 * (1 - on[1] / off[1]):.1f}% per client CPU-second: host-wide hooks also run in the client)")
PY
