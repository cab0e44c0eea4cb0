#!/usr/bin/env bash
# Probe scale: TARGETS probe targets (default 10,000) every INTERVAL seconds (default 5) against
# a local fleet of fake vLLM edges, with tdnd's own scheduler, prober and health monitor
# (tdn-probe-bench). Prints probes/s achieved against the schedule's need, the schedule lag
# (how late probes start) and CPU, for the prober and the fake edges separately.
#
#   bench/probes.sh                         # 10,000 health probes every 5 s, 30 s measured
#   KIND=both bench/probes.sh               # each target: /health and /metrics (parsed)
#   TARGETS=20000 DURATION=60 bench/probes.sh
source "$(dirname "$0")/lib.sh"
TARGETS=${TARGETS:-10000}
INTERVAL=${INTERVAL:-5}
DURATION=${DURATION:-30}
KIND=${KIND:-health}
CONCURRENCY=${CONCURRENCY:-256}
EDGE_THREADS=${EDGE_THREADS:-1}

swift build -c release --product tdn-fake-edge >/dev/null
swift build -c release --product tdn-probe-bench >/dev/null
ulimit -n 65536 2>/dev/null || true

port=$(free_port)
.build/release/tdn-fake-edge --port "$port" --sites "$TARGETS" --threads "$EDGE_THREADS" >"$work/edges.log" 2>&1 &
edges=$!
pids+=("$edges")
for _ in $(seq 50); do grep -q "sites on" "$work/edges.log" 2>/dev/null && break; sleep 0.1; done

edge_before=$(cpu_ticks "$edges")
.build/release/tdn-probe-bench --edges "http://127.0.0.1:$port" --targets "$TARGETS" --interval "$INTERVAL" \
    --duration "$DURATION" --kind "$KIND" --concurrency "$CONCURRENCY"
edge_after=$(cpu_ticks "$edges")
# The fake edges ran for the warm-up interval and the measured time.
awk -v t=$((edge_after - edge_before)) -v hz="$ticks_per_second" -v d="$DURATION" -v i="$INTERVAL" \
    'BEGIN { printf "fake edges CPU %.2f s over %.0f s (%.0f%% of one core)\n", t / hz, d + i, 100 * t / hz / (d + i) }'
