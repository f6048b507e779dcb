#!/usr/bin/env bash
# Throughput under a latency limit: open-loop `holdfast-bench rate` (latency from each request's
# intended send time, so coordinated omission is corrected) at SESSIONS (default 10,000)
# connections, 64-byte Echo frames, offered loads RATES, against Holdfast (`serve --shards
# CORES`), holdfast-baseline-tokio (CORES workers) and holdfast-baseline-glommio (CORES
# executors). One server alive at a time; each serves every rate in turn. ROUNDS rounds, the systems alternating within each
# (round N's runs in $OUT/rN). Writes $OUT/sweep.csv (system,offered_per_s,p99_ms,p999_ms: the
# medians over the rounds), prints every run and the medians, the highest offered load each
# system sustains with median P99 <= P99_LIMIT_MS and median P99.9 <= P999_LIMIT_MS (and every
# reply back in every round), and draws $OUT/rate-sweep-load.png with `holdfast-bench plot`.
# Build first:
#   cargo build --release -p holdfast-server -p holdfast-bench
#   ROUNDS=3 RATES="5000 10000 20000 30000" bench/scripts/rate-sweep.sh
set -euo pipefail
R=${R:-target/release}
OUT=${OUT:-target/bench/rate-sweep}
SESSIONS=${SESSIONS:-10000}
CORES=${CORES:-$(nproc)}
RATES=${RATES:-5000 10000 20000 30000 40000}
SYSTEMS=${SYSTEMS:-holdfast tokio glommio}
ROUNDS=${ROUNDS:-1}
WARMUP_S=${WARMUP_S:-2}
DURATION_S=${DURATION_S:-8}
P99_LIMIT_MS=${P99_LIMIT_MS:-2}
P999_LIMIT_MS=${P999_LIMIT_MS:-10}
mkdir -p "$OUT"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    dir="$OUT/r$round"
    mkdir -p "$dir"
    for system in $SYSTEMS; do
        case $system in
            holdfast) exec $R/holdfast serve --listen 127.0.0.1:17831 --admin-listen 127.0.0.1:17832 --shards "$CORES" ;;
            tokio) exec $R/holdfast-baseline-tokio --listen 127.0.0.1:17831 --cores "$CORES" ;;
            glommio) exec $R/holdfast-baseline-glommio --listen 127.0.0.1:17831 --cores "$CORES" ;;
            *) echo "unknown system $system" >&2; exit 2 ;;
        esac > "$dir/$system.server.out" 2> "$dir/$system.server.err" &
        pid=$! # the server itself: each branch execs it in the background subshell
        for _ in $(seq 100); do
            grep -q "listening" "$dir/$system.server.out" "$dir/$system.server.err" 2>/dev/null && break
            sleep 0.1
        done
        for rate in $RATES; do
            echo "round $round: $system at $rate/s (load average $(cut -d' ' -f1 /proc/loadavg))"
            nice -n 5 $R/holdfast-bench rate --target 127.0.0.1:17831 --sessions "$SESSIONS" --rate-per-s "$rate" \
                --payload-bytes 64 --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" --server-pid $pid \
                --out "$dir" --label "$system-$rate" > "$dir/$system-$rate.txt" 2> "$dir/$system-$rate.err" \
                || echo "$system at $rate/s: the run failed (see $dir/$system-$rate.err)"
        done
        kill -TERM $pid 2>/dev/null || true
        wait $pid 2>/dev/null || true
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" "$P99_LIMIT_MS" "$P999_LIMIT_MS" "$SYSTEMS" "$RATES" "$ROUNDS" <<'PY'
import json, os, statistics, sys
out, p99_limit, p999_limit = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
systems, rates, rounds = sys.argv[4].split(), sys.argv[5].split(), int(sys.argv[6])
rows, best = [], {}
for system in systems:
    for rate in rates:
        p99s, p999s, cpus, all_back = [], [], [], True
        for round in range(1, rounds + 1):
            f = f"{out}/r{round}/{system}-{rate}.json"
            if not os.path.exists(f):
                all_back = False
                continue
            r = json.load(open(f))
            lat = r["histograms"][r["main_histogram"]]
            p99, p999 = lat["p99_us"] / 1000, lat["p999_us"] / 1000
            back = r["errors_total"] == 0 and r["requests_unaccounted"] == 0
            all_back = all_back and back
            cpu = (r.get("server_cpu") or {}).get("round_trips_per_cpu_s", float("nan"))
            p99s.append(p99); p999s.append(p999); cpus.append(cpu)
            print(f"round {round} {system:17} offered {rate:>6}/s: achieved {r['replies_per_s']:.0f}/s, "
                  f"P99 {p99:.2f} ms, P99.9 {p999:.2f} ms, errors {r['errors_total']}, "
                  f"round trips per server CPU-s {cpu:.0f}")
        if not p99s:
            continue
        p99, p999, cpu = statistics.median(p99s), statistics.median(p999s), statistics.median(cpus)
        rows.append(f"{system},{rate},{p99:.3f},{p999:.3f}")
        print(f"median  {system:17} offered {rate:>6}/s: P99 {p99:.2f} ms [{', '.join(f'{v:.2f}' for v in p99s)}], "
              f"P99.9 {p999:.2f} ms [{', '.join(f'{v:.2f}' for v in p999s)}], round trips per server CPU-s {cpu:.0f}")
        if p99 <= p99_limit and p999 <= p999_limit and all_back:
            best[system] = max(best.get(system, 0), int(rate))
open(f"{out}/sweep.csv", "w").write("system,offered_per_s,p99_ms,p999_ms\n" + "\n".join(rows) + "\n")
for system in systems:
    print(f"{system:17} highest offered load with median P99 <= {p99_limit} ms and P99.9 <= {p999_limit} ms: "
          f"{best[system] if system in best else 'none of ' + ' '.join(rates)}")
PY
$R/holdfast-bench plot "$OUT/sweep.csv" --out "$OUT/rate-sweep"
