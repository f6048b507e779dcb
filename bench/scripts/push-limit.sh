#!/usr/bin/env bash
# Push at the limit: one broadcast of a 64-byte payload to SESSIONS (default 18,000: RLIMIT_NOFILE is 20,000 here) subscribers,
# Holdfast (`serve --shards SHARDS`) against holdfast-baseline-push (one prebuilt Push frame sent
# to every socket through io_uring, nothing else), alternating, ROUNDS rounds (default 3), one
# server alive at a time. The server's CPU is charged over the burst only (first publish to last
# delivery, sampled every 1 ms by `push --server-pid`), not over the whole window. Prints the
# medians and the ratios Holdfast / baseline. Build first:
#   cargo build --release -p holdfast-server -p holdfast-bench
#   ROUNDS=3 bench/scripts/push-limit.sh
set -euo pipefail
R=${R:-target/release}
OUT=${OUT:-target/bench/push-limit}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-18000}
SHARDS=${SHARDS:-2}
# Sessions need one fd each on the server: the default stays under a 20,000 RLIMIT_NOFILE.
if (( SESSIONS + 1024 > $(ulimit -Hn) )); then
    echo "SESSIONS=$SESSIONS needs $((SESSIONS + 1024)) fds; the hard limit here is $(ulimit -Hn)" >&2; exit 2
fi
ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run() { # system round
    local label="$1-$2"
    case $1 in
        holdfast) $R/holdfast serve --listen 127.0.0.1:17821 \
                      --admin-listen 127.0.0.1:17822 --shards "$SHARDS" > "$OUT/$label.server.out" 2> "$OUT/$label.server.err" & ;;
        baseline) $R/holdfast-baseline-push --listen 127.0.0.1:17821 \
                      --admin-listen 127.0.0.1:17822 > "$OUT/$label.server.out" 2> "$OUT/$label.server.err" & ;;
    esac
    local pid=$!
    for _ in $(seq 100); do # up to 10 s for the listening line
        grep -q "listening" "$OUT/$label.server.out" "$OUT/$label.server.err" 2>/dev/null && break
        sleep 0.1
    done
    $R/holdfast-bench push --target 127.0.0.1:17821 --admin 127.0.0.1:17822 --sessions "$SESSIONS" \
        --broadcast-burst 1 --payload-bytes 64 --warmup-s 0 --duration-s 2 --drain-ms 3000 \
        --server-pid $pid --out "$OUT" --label "$label" > "$OUT/$label.txt" 2> "$OUT/$label.err" || true
    kill -TERM $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    grep -E "^(deliveries|burst)" "$OUT/$label.txt" | sed "s/^/$label: /" || echo "$label: no result (see $OUT/$label.err)"
}
for i in $(seq "$ROUNDS"); do
    if (( i % 2 )); then run baseline $i; run holdfast $i; else run holdfast $i; run baseline $i; fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" <<'PY'
import json, glob, statistics, sys
out = sys.argv[1]
def figures(system):
    rows = []
    for f in sorted(glob.glob(f"{out}/{system}-*.json")):
        r = json.load(open(f))
        p = r.get("push") or {}
        if not p.get("clean") or p.get("burst_deliveries_per_server_cpu_s") is None:
            print(f"{f}: not clean or no burst CPU figure: left out")
            continue
        lat = r["histograms"][r["main_histogram"]]
        rows.append((p["burst_deliveries_per_server_cpu_s"], lat["p99_us"] / 1000, lat["max_us"] / 1000,
                     p["burst_server_cpu_ms"], p["burst_span_ms"]))
    if not rows:
        sys.exit(f"no clean {system} run")
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"{system:8} runs {len(rows)}: deliveries per server CPU-s over the burst median {med[0]:.0f} "
          f"{sorted(round(r[0]) for r in rows)}; P99 {med[1]:.1f} ms; last delivery {med[2]:.1f} ms; "
          f"burst CPU {med[3]:.1f} ms; burst span {med[4]:.1f} ms")
    return med
b, h = figures("baseline"), figures("holdfast")
print(f"Holdfast / baseline: deliveries per server CPU-second {h[0] / b[0]:.2f}x (goal >= 0.9x); "
      f"Holdfast P99 / baseline's last delivery {h[1] / b[2]:.2f}x (goal <= 1.2x)")
PY
