#!/usr/bin/env bash
# Ledger ingest: concurrent edges post signed usage batches to `tdnd ledger serve` (release
# build, a fresh SQLite file in a temporary directory); prints records/s acknowledged and
# latency. Two runs: batches of 100 records, and single-record requests.
#
#   bench/ledger.sh                      # 10 s each
#   DURATION=30 CLIENTS=32 bench/ledger.sh
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
swift build -c release >/dev/null
# The request decoder alone, against Foundation's JSONDecoder as the reference (same batch,
# interleaved rounds, CPU per record of this thread).
.build/release/tdn-ledger-bench --url unused --edge fra1 --key unused --batch 100 --decode-rounds 2000
port=$(free_port)
key=bench-edge-key-0123456789
cat >"$work/tdnd.yaml" <<YAML
ledger:
  listen: 127.0.0.1:$port
  data: data
  admin-key: bench-admin-key-0123456789
  edges: {fra1: $key}
  tenants: [acme, globex]
  rates:
    llama-13b: {prompt: 0.2, completion: 0.6}
    mistral-7b: {prompt: 0.1, completion: 0.3}
YAML
SWIFT_BACKTRACE=enable=no .build/release/tdnd ledger serve --config "$work/tdnd.yaml" 2>"$work/ledger.log" &
ledger=$!
pids+=("$ledger")
for _ in $(seq 100); do grep -q "ledger API on" "$work/ledger.log" 2>/dev/null && break; sleep 0.1; done

for batch in 100 1; do
    before=$(cpu_ticks "$ledger")
    .build/release/tdn-ledger-bench --url "http://127.0.0.1:$port" --edge fra1 --key "$key" \
        --batch "$batch" --clients "$CLIENTS" --duration "$DURATION" --prefix "b$batch"
    after=$(cpu_ticks "$ledger")
    awk -v t=$((after - before)) -v hz="$ticks_per_second" -v d="$DURATION" \
        'BEGIN { printf "  ledger CPU %.0f%% of one core\n", 100 * t / hz / d }'
done
SWIFT_BACKTRACE=enable=no .build/release/tdnd ledger verify --config "$work/tdnd.yaml" | tail -2
ls -l "$work/data/ledger.sqlite" | awk '{ printf "  database %.1f MB\n", $5 / 1e6 }'

# Sync: a real PostgreSQL (Debian's, on a free loopback port in the work directory), then a
# second ledger on the same data with `sync` configured; time until everything has arrived.
if [ "${SYNC:-1}" = 1 ]; then
    kill "$ledger"; wait "$ledger" 2>/dev/null || true
    scripts/install-deps.sh postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -1)
    pgport=$(free_port)
    chmod 755 "$work" && mkdir -p "$work/pg" && chown -R postgres "$work/pg"
    runuser -u postgres -- "$bin/initdb" -D "$work/pg/data" -A trust -U tdn >/dev/null
    runuser -u postgres -- "$bin/pg_ctl" -D "$work/pg/data" -w -l "$work/pg/log" \
        -o "-p $pgport -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
    trap 'runuser -u postgres -- "$bin/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null; cleanup' EXIT
    psql -h 127.0.0.1 -p "$pgport" -U tdn -d postgres -qc "CREATE DATABASE tdn"
    cat >>"$work/tdnd.yaml" <<YAML
  sync: {host: 127.0.0.1, port: $pgport, user: tdn, database: tdn, node: bench, batch: 5000, interval: 0.2}
YAML
    total=$(sqlite3 "$work/data/ledger.sqlite" "SELECT count(*) FROM records")
    start=$(date +%s.%N)
    SWIFT_BACKTRACE=enable=no .build/release/tdnd ledger serve --config "$work/tdnd.yaml" 2>"$work/sync.log" &
    pids+=("$!")
    while :; do
        have=$(psql -h 127.0.0.1 -p "$pgport" -U tdn -d tdn -Atc "SELECT count(*) FROM ledger_records" 2>/dev/null || echo 0)
        [ "${have:-0}" -ge "$total" ] && break
        sleep 0.2
    done
    end=$(date +%s.%N)
    awk -v n="$total" -v s="$start" -v e="$end" 'BEGIN { printf "sync: %d records to PostgreSQL in %.1f s, %.0f records/s\n", n, e - s, n / (e - s) }'
fi
