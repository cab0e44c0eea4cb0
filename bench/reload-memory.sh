#!/usr/bin/env bash
# Memory across reloads: a zone of RECORDS A records served by a release tdnd, reloaded by
# SIGHUP ROUNDS times; prints the resident set after the start and after each reload.
#
#   bench/reload-memory.sh                         # 200,000 records, 6 reloads
#   RECORDS=60000 ROUNDS=10 bench/reload-memory.sh
source "$(dirname "$0")/lib.sh"
RECORDS=${RECORDS:-200000}
ROUNDS=${ROUNDS:-6}
swift build -c release >/dev/null
mkdir -p "$work/zones"
python3 - "$work/zones/big.example.zone" "$RECORDS" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n IN NS ns1\nns1 IN A 192.0.2.53\n")
    for i in range(int(sys.argv[2])):
        f.write(f"h{i} IN A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
PY
printf 'zones: zones\nlisten: [127.0.0.1:0]\nstatus: off\nthreads: 2\nwatch-interval: 0\n' >"$work/tdnd.yaml"
SWIFT_BACKTRACE=enable=no .build/release/tdnd serve --config "$work/tdnd.yaml" 2>"$work/tdnd.log" &
pid=$!
pids+=("$pid")
for _ in $(seq 600); do grep -q "serving" "$work/tdnd.log" && break; sleep 0.2; done
rss() { awk '/VmRSS/ { printf "%.0f MB", $2 / 1024 }' "/proc/$pid/status"; }
sleep 4
echo "$RECORDS records; after the start: $(rss)"
for round in $(seq "$ROUNDS"); do
    before=$(grep -c "reloaded:" "$work/tdnd.log" || true)
    kill -HUP "$pid"
    for _ in $(seq 1200); do [ "$(grep -c "reloaded:" "$work/tdnd.log" || true)" -gt "$before" ] && break; sleep 0.1; done
    sleep 4
    echo "after reload $round: $(rss)"
done
