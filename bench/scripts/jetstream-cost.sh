#!/usr/bin/env bash
# JetStream mode cost (issue 15): push deliveries per server CPU-second and publish->delivery
# latency, a standalone host vs a cluster_mode = "jetstream" host (nats-server -js on loopback),
# the two runs alternating, RUNS times (each on a fresh topic).
#
#   BIN_DIR=target/release SESSIONS=100 RATE=200 RUNS=3 bench/scripts/jetstream-cost.sh
#
# Loopback only. The server CPU counted is the holdfast process's (its bridge thread included),
# not nats-server's.
set -euo pipefail
B=${BIN_DIR:-target/release}
RUNS=${RUNS:-3}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf $W' EXIT
"$(command -v nats-server || echo /usr/sbin/nats-server)" -js -a 127.0.0.1 -p 14300 -sd $W/nats >/dev/null 2>&1 &
sleep 1
printf 'listen = "127.0.0.1:17990"\nadmin_listen = "127.0.0.1:17991"\nshards = 2\n' > $W/solo.toml
printf 'listen = "127.0.0.1:18990"\nadmin_listen = "127.0.0.1:18991"\nshards = 2\nnats_url = "nats://127.0.0.1:14300"\ncluster_mode = "jetstream"\n' > $W/js.toml
$B/holdfast serve --config $W/solo.toml >/dev/null 2>&1 & SOLO=$!
$B/holdfast serve --config $W/js.toml >/dev/null 2>&1 & JS=$!
sleep 2
for r in $(seq 1 $RUNS); do
  for mode in solo js; do
    if [ $mode = solo ]; then P=17990; A=17991; PID=$SOLO; else P=18990; A=18991; PID=$JS; fi
    echo "== run $r $mode load $(cut -d' ' -f1 /proc/loadavg)"
    $B/holdfast-bench push --target 127.0.0.1:$P --admin 127.0.0.1:$A --sessions ${SESSIONS:-1000} --topic news-$r \
      --rate-per-s ${RATE:-200} --payload-bytes 64 --warmup-s 1 --duration-s 5 --drain-ms 2000 --server-pid $PID \
      --out $W/$mode-$r.json 2>&1 | grep -E "^latency|publisher http|CPU|^deliveries"
  done
done
