#!/usr/bin/env bash
# Throughput under a latency limit: open-loop `holdfast-bench rate` (latency from each request's
# intended send time, so coordinated omission is corrected) at SESSIONS (default 10,000)
# connections, 64-byte Echo frames, offered loads RATES, against Holdfast (`serve --shards
# CORES`), holdfast-baseline-tokio (CORES workers) and holdfast-baseline-glommio (CORES
# executors). One server alive at a time; each serves every rate in turn. Writes
# $OUT/sweep.csv (system,offered_per_s,p99_ms,p999_ms), prints the highest offered load each
# system sustains with P99 <= P99_LIMIT_MS and P99.9 <= P999_LIMIT_MS (and every reply back),
# and draws $OUT/rate-sweep-load.png with `holdfast-bench plot`. Build first:
#   cargo build --release -p holdfast-server -p holdfast-bench
#   RATES="5000 10000 20000 30000" bench/scripts/rate-sweep.sh
set -euo pipefail
R=${R:-target/release}
OUT=${OUT:-target/bench/rate-sweep}
SESSIONS=${SESSIONS:-10000}
CORES=${CORES:-$(nproc)}
RATES=${RATES:-5000 10000 20000 30000 40000}
SYSTEMS=${SYSTEMS:-holdfast tokio glommio}
WARMUP_S=${WARMUP_S:-2}
DURATION_S=${DURATION_S:-8}
P99_LIMIT_MS=${P99_LIMIT_MS:-2}
P999_LIMIT_MS=${P999_LIMIT_MS:-10}
mkdir -p "$OUT"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for system in $SYSTEMS; do
    case $system in
        holdfast) exec $R/holdfast serve --listen 127.0.0.1:17831 --admin-listen 127.0.0.1:17832 --shards "$CORES" ;;
        tokio) exec $R/holdfast-baseline-tokio --listen 127.0.0.1:17831 --cores "$CORES" ;;
        glommio) exec $R/holdfast-baseline-glommio --listen 127.0.0.1:17831 --cores "$CORES" ;;
    esac > "$OUT/$system.server.out" 2> "$OUT/$system.server.err" &
    pid=$! # the server itself: each branch execs it in the background subshell
    for _ in $(seq 100); do
        grep -q "listening" "$OUT/$system.server.out" "$OUT/$system.server.err" 2>/dev/null && break
        sleep 0.1
    done
    for rate in $RATES; do
        nice -n 5 $R/holdfast-bench rate --target 127.0.0.1:17831 --sessions "$SESSIONS" --rate-per-s "$rate" \
            --payload-bytes 64 --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" --server-pid $pid \
            --out "$OUT" --label "$system-$rate" > "$OUT/$system-$rate.txt" 2> "$OUT/$system-$rate.err" \
            || echo "$system at $rate/s: the run failed (see $OUT/$system-$rate.err)"
    done
    kill -TERM $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" "$P99_LIMIT_MS" "$P999_LIMIT_MS" "$SYSTEMS" "$RATES" <<'PY'
import json, os, sys
out, p99_limit, p999_limit, systems, rates = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(), sys.argv[5].split()
rows, best = [], {}
for system in systems:
    for rate in rates:
        f = f"{out}/{system}-{rate}.json"
        if not os.path.exists(f):
            continue
        r = json.load(open(f))
        lat = r["histograms"][r["main_histogram"]]
        p99, p999 = lat["p99_us"] / 1000, lat["p999_us"] / 1000
        all_back = r["errors_total"] == 0 and r["requests_unaccounted"] == 0
        cpu = r.get("server_cpu") or {}
        rows.append(f"{system},{rate},{p99:.3f},{p999:.3f}")
        print(f"{system:8} offered {rate:>6}/s: achieved {r['replies_per_s']:.0f}/s, P99 {p99:.2f} ms, P99.9 {p999:.2f} ms, "
              f"errors {r['errors_total']}, round trips per server CPU-s {cpu.get('round_trips_per_cpu_s', float('nan')):.0f}")
        if p99 <= p99_limit and p999 <= p999_limit and all_back:
            best[system] = max(best.get(system, 0), int(rate))
open(f"{out}/sweep.csv", "w").write("system,offered_per_s,p99_ms,p999_ms\n" + "\n".join(rows) + "\n")
for system in systems:
    print(f"{system:8} highest offered load with P99 <= {p99_limit} ms and P99.9 <= {p999_limit} ms: "
          f"{best[system] if system in best else 'none of ' + ' '.join(rates)}")
PY
$R/holdfast-bench plot "$OUT/sweep.csv" --out "$OUT/rate-sweep"
