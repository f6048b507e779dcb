#!/usr/bin/env bash
# Echo per server CPU-second with shards = cores against shards = 1, and the server's context
# switches (voluntary: a shard went to sleep and had to be woken) per round trip, from
# /proc/PID/task/*/status before and after each run, and the shard loop's counters from
# /metrics (completions per io_uring_enter, parks in glommio and waits in the ring per round
# trip). `holdfast-bench echo --sessions SESSIONS --inflight 1`, the client on the same cores;
# alternating, ROUNDS rounds. Build first:
#   cargo build --release -p holdfast-server -p holdfast-bench
#   ROUNDS=3 bench/scripts/shards-echo.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/scripts/lib.sh
ADMIN_PORT=17842
R=${R:-target/release}
OUT=${OUT:-target/bench/shards-echo}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-1000}
CORES=${CORES:-$(nproc)}
mkdir -p "$OUT"
switches() { # pid -> voluntary nonvoluntary, summed over threads
    cat /proc/$1/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2} END {print v, n}'
}
ring_counters() { # enters completions sleeps waits_woken, summed over shards
    local name
    for name in enters completions sleeps waits_woken; do printf '%s ' "$(metric "holdfast_ring_${name}_total")"; done
    echo
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run() { # shards round
    local label="shards$1-$2"
    $R/holdfast serve --listen 127.0.0.1:17841 --admin-listen 127.0.0.1:17842 --shards "$1" > "$OUT/$label.server.out" 2> "$OUT/$label.server.err" &
    local pid=$!
    for _ in $(seq 100); do grep -q "holdfast listening" "$OUT/$label.server.out" 2>/dev/null && break; sleep 0.1; done
    local before; before=$(switches $pid)
    ring_counters > "$OUT/$label.ring-before"
    $R/holdfast-bench echo --target 127.0.0.1:17841 --sessions "$SESSIONS" --inflight 1 --warmup-s 2 --duration-s 8 \
        --server-pid $pid --out "$OUT" --label "$label" > "$OUT/$label.txt" 2> "$OUT/$label.err" || true
    local after; after=$(switches $pid)
    ring_counters > "$OUT/$label.ring-after"
    kill -TERM $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    echo "$before $after" > "$OUT/$label.switches"
}
for i in $(seq "$ROUNDS"); do
    if (( i % 2 )); then run 1 $i; run "$CORES" $i; else run "$CORES" $i; run 1 $i; fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" "$CORES" <<'PY'
import json, glob, statistics, sys
out, cores = sys.argv[1], sys.argv[2]
for shards in ["1", cores]:
    per_cpu, per_rt, ring = [], [], []
    for f in sorted(glob.glob(f"{out}/shards{shards}-*.json")):
        r = json.load(open(f))
        sw = [int(x) for x in open(f[:-5] + ".switches").read().split()]
        trips = r["counters"]["replies_ok"]
        per_cpu.append(r["server_cpu"]["round_trips_per_cpu_s"])
        per_rt.append(((sw[2] - sw[0]) / trips, (sw[3] - sw[1]) / trips))
        # The ring counters cover setup and warm-up too: a comparison, not an exact cost.
        before = [int(x) for x in open(f[:-5] + ".ring-before").read().split()]
        after = [int(x) for x in open(f[:-5] + ".ring-after").read().split()]
        enters, completions, sleeps, woken = (a - b for a, b in zip(after, before))
        ring.append((completions / max(enters, 1), enters / trips, sleeps / trips, woken / trips))
    med = lambda i: statistics.median(x[i] for x in ring)
    print(f"shards={shards}: round trips per server CPU-s median {statistics.median(per_cpu):.0f} {sorted(round(x) for x in per_cpu)}; "
          f"voluntary switches per round trip {statistics.median(v for v, _ in per_rt):.3f}, involuntary {statistics.median(n for _, n in per_rt):.3f}; "
          f"completions per enter {med(0):.2f}, enters per round trip {med(1):.3f}, parks per round trip {med(2):.4f}, "
          f"ring waits woken per round trip {med(3):.4f}")
PY
