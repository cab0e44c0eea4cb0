#!/usr/bin/env bash
# dnsperf against tdnd and Knot DNS serving the same zone, interleaved (A B A B ...).
# Prints QPS (min/median/max) and server CPU time per answered query, with tdnd/Knot ratios.
#
#   bench/dns.sh                 # defaults below
#   ROUNDS=6 DURATION=10 CLIENTS=8 THREADS=2 bench/dns.sh
#
# Knot is configured without its rate-limiting module (it has none unless `mod-rrl` is
# loaded) and with the same number of UDP workers as tdnd has threads.
source "$(dirname "$0")/lib.sh"
dnsperf_defaults
QUERIES=${QUERIES:-bench/queries.txt}

scripts/install-deps.sh dnsperf knot libldns-dev libmaxminddb-dev libsqlite3-dev pkg-config
swift build -c release --product tdnd >/dev/null

knot_port=$(free_port)
tdnd_port=$(free_port)
cp zones/* "$work/"

cat > "$work/knot.conf" <<CONF
server:
    rundir: "$work"
    listen: 127.0.0.1@$knot_port
    udp-workers: $THREADS
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$work/db"
template:
  - id: default
    storage: "$work"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: tdn.example.
    file: tdn.example.zone
  - domain: 2.0.192.in-addr.arpa.
    file: 2.0.192.in-addr.arpa.zone
CONF
knotd -c "$work/knot.conf" >"$work/knot.log" 2>&1 &
knot_pid=$!
pids+=("$knot_pid")
# An empty configuration: the same zones as Knot and nothing else (no steering policy).
: > "$work/tdnd.yaml"
SWIFT_BACKTRACE=enable=no .build/release/tdnd serve --config "$work/tdnd.yaml" --zones "$work" --listen "127.0.0.1:$tdnd_port" \
    --threads "$THREADS" --status off --log-level warning >"$work/tdnd.log" 2>&1 &
tdnd_pid=$!
pids+=("$tdnd_pid")
for port in $knot_port $tdnd_port; do
    for _ in $(seq 50); do dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 tdn.example SOA >/dev/null 2>&1 && break; sleep 0.2; done
done

# Both servers must give the same answers before their speed is worth comparing.
differences=0
while read -r name type; do
    a=$(dig +norec +noall +answer +authority +additional -p "$knot_port" @127.0.0.1 "$name" "$type" | sort)
    b=$(dig +norec +noall +answer +authority +additional -p "$tdnd_port" @127.0.0.1 "$name" "$type" | sort)
    if [ "$a" != "$b" ]; then
        differences=$((differences + 1))
        echo "differs: $name $type"; diff <(echo "$a") <(echo "$b") | sed 's/^/    /' || true
    fi
done < "$QUERIES"
echo "answers compared with Knot: $(wc -l < "$QUERIES") queries, $differences differ"

run() { # name port pid
    local before after out completed qps
    before=$(cpu_ticks "$3")
    out=$(dnsperf -s 127.0.0.1 -p "$2" -d "$QUERIES" -l "$DURATION" -c "$CLIENTS" -T 2 -q 200 2>&1)
    after=$(cpu_ticks "$3")
    completed=$(echo "$out" | awk '/Queries completed:/ {print $3}')
    qps=$(echo "$out" | awk '/Queries per second:/ {print $4}')
    lost=$(echo "$out" | awk '/Queries lost:/ {print $3}')
    echo "$1 $qps $(echo "($after - $before) / $ticks_per_second * 1000000 / $completed" | bc -l) $lost" >> "$work/results"
    printf '  %-5s %10.0f q/s  %6.2f us CPU/query  lost %s\n' "$1" "$qps" \
        "$(echo "($after - $before) / $ticks_per_second * 1000000 / $completed" | bc -l)" "$lost"
}
echo "dnsperf: $ROUNDS rounds x ${DURATION}s, $CLIENTS clients, both servers on $THREADS threads, $(wc -l < "$QUERIES") query types"
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    run knot "$knot_port" "$knot_pid"
    run tdnd "$tdnd_port" "$tdnd_pid"
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
data = {}
for name, qps, cpu, lost in rows:
    data.setdefault(name, {"qps": [], "cpu": []})
    data[name]["qps"].append(float(qps))
    data[name]["cpu"].append(float(cpu))
print()
print(f"{'server':8}{'QPS min':>10}{'median':>10}{'max':>10}{'CPU us/q (median)':>20}")
for name in ("knot", "tdnd"):
    q, c = data[name]["qps"], data[name]["cpu"]
    print(f"{name:8}{min(q):10.0f}{statistics.median(q):10.0f}{max(q):10.0f}{statistics.median(c):20.2f}")
k, t = data["knot"], data["tdnd"]
print()
print(f"tdnd/knot QPS (median): {statistics.median(t['qps']) / statistics.median(k['qps']):.2f}")
print(f"tdnd/knot CPU per query (median): {statistics.median(t['cpu']) / statistics.median(k['cpu']):.2f}")
PY
