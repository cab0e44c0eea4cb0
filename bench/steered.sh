#!/usr/bin/env bash
# Steered answers: tdnd (static names, and model names) against gdnsd's geoip plugin and
# PowerDNS's geoip backend, all on the same MMDB (the demo's, built from tor-geoipdb), with
# dnsperf in one interleaved run. Every query carries its own ECS option for a /24 or /56 sampled
# from real address ranges (bench/make-queries.py).
#
#   bench/steered.sh                      # ROUNDS=4 DURATION=10 CLIENTS=8 THREADS=2
#   BASELINE=/path/to/tdnd bench/steered.sh   # and an earlier build on the same configuration
#
# The references answer the same model names from the same sites: gdnsd in "City auto mode"
# (nearest datacenters by the database's coordinates, one map per model with the sites that can
# serve it), PowerDNS by continent records. Neither expresses our sovereignty rules, so they do
# somewhat less work per query than tdnd; the comparison is of the lookup, not the policy.
source "$(dirname "$0")/lib.sh"
dnsperf_defaults
MMDB=build/geoip/tor-country.mmdb

scripts/install-deps.sh dnsperf gdnsd pdns-server pdns-backend-geoip python3-yaml tor-geoipdb bc \
    libldns-dev libmaxminddb-dev libsqlite3-dev pkg-config
[ -f "$MMDB" ] || python3 scripts/build-geoip.py --tor /usr/share/tor --out "$MMDB"
swift build -c release --product tdnd >/dev/null

tdnd_port=$(free_port); gdnsd_port=$(free_port); pdns_port=$(free_port)
mmdb=$(readlink -f "$MMDB")
/usr/bin/python3 bench/make-queries.py --steered "$work/steered.bin" --static "$work/static.bin" --count 50000

# gdnsd and PowerDNS configurations generated from the demo policy.
/usr/bin/python3 - "$work" "$gdnsd_port" "$pdns_port" "$mmdb" <<'PY'
import os, sys, yaml
work, gdnsd_port, pdns_port, mmdb = sys.argv[1:]
policy = yaml.safe_load(open("zones/tdn.example.policy.yaml"))
sites, models = policy["sites"], policy["models"]
size = lambda text: float(str(text).lower().rstrip("b"))
def eligible(model):
    spec = models[model]
    return [s for s, v in sites.items() if v["tier"] in spec.get("tiers", ["edge", "regional", "central"])
            and size(v.get("max-model", "1000b")) >= size(spec["size"])
            and (not spec.get("served-in") or v["jurisdiction"] in spec["served-in"])]
os.makedirs(f"{work}/gdnsd/zones", exist_ok=True)
lines = ["options => {", f"  listen => [ 127.0.0.1:{gdnsd_port} ]", "  udp_threads => 2", "  tcp_threads => 1", "}",
         "plugins => { geoip => {", "  maps => {"]
for model in models:
    dcs = eligible(model)
    coords = ", ".join(f"{s} => [ {sites[s]['location']['lat']}, {sites[s]['location']['lon']} ]" for s in dcs)
    lines.append(f"    map_{model} => {{ geoip2_db => {mmdb}, datacenters => [ {', '.join(dcs)} ], auto_dc_coords => {{ {coords} }}, auto_dc_limit => 2 }}")
lines += ["  }", "  resources => {"]
for model in models:
    dcmap = ", ".join(f"{s} => {{ addrs_v4 => [ {', '.join(sites[s]['ipv4'])} ], addrs_v6 => [ {', '.join(sites[s]['ipv6'])} ] }}" for s in eligible(model))
    lines.append(f"    {model} => {{ map => map_{model}, dcmap => {{ {dcmap} }} }}")
lines += ["  }", "}}"]
open(f"{work}/gdnsd/config", "w").write("\n".join(lines) + "\n")
zone = ["@ 3600 SOA ns1 hostmaster 2026112201 7200 900 1209600 60", "@ 3600 NS ns1", "ns1 300 A 192.0.2.53"]
zone += [f"{model} {models[model].get('ttl', 30)} DYNA geoip!{model}" for model in models]
open(f"{work}/gdnsd/zones/tdn.example", "w").write("\n".join(zone) + "\n")
# PowerDNS: per continent, the two nearest eligible sites by the continent's rough centre.
centres = {"EU": (50, 10), "NA": (40, -95), "SA": (-15, -60), "AS": (30, 105), "AF": (5, 20), "OC": (-25, 135), "AN": (-75, 0)}
def nearest(model, lat, lon):
    return sorted(eligible(model), key=lambda s: (sites[s]["location"]["lat"] - lat) ** 2 + (sites[s]["location"]["lon"] - lon) ** 2)[:2]
records = {"tdn.example": [{"soa": "ns1.tdn.example hostmaster.tdn.example 2026112201 7200 900 1209600 60"}, {"ns": "ns1.tdn.example"}],
           "ns1.tdn.example": [{"a": "192.0.2.53"}]}
services = {}
for model in models:
    for continent, (lat, lon) in list(centres.items()) + [("default", (50, 10))]:
        entries = []
        for s in nearest(model, lat, lon):
            entries += [{"a": a} for a in sites[s]["ipv4"]] + [{"aaaa": a} for a in sites[s]["ipv6"]]
        records[f"{continent.lower()}.{model}.tdn.example"] = entries
    services[f"{model}.tdn.example"] = [f"%cn.{model}.tdn.example", f"default.{model}.tdn.example"]
yaml.safe_dump({"domains": [{"domain": "tdn.example", "ttl": 30, "records": records, "services": services}]}, open(f"{work}/pdns-geo.yaml", "w"))
open(f"{work}/pdns.conf", "w").write("\n".join([
    "launch=geoip", f"geoip-database-files=mmdb:{mmdb}", f"geoip-zones-file={work}/pdns-geo.yaml",
    "local-address=127.0.0.1", f"local-port={pdns_port}", "receiver-threads=2", "distributor-threads=2", "reuseport=yes",
    "edns-subnet-processing=yes", f"socket-dir={work}", "daemon=no", "guardian=no", "disable-syslog=yes", "loglevel=3",
    "max-queue-length=100000", "cache-ttl=0", "query-cache-ttl=0", "negquery-cache-ttl=0", "zone-cache-refresh-interval=0"]) + "\n")
PY

SWIFT_BACKTRACE=enable=no .build/release/tdnd serve --config tdnd.yaml --listen "127.0.0.1:$tdnd_port" --threads "$THREADS" \
    --status off --log-level warning >"$work/tdnd.log" 2>&1 &
tdnd_pid=$!; pids+=("$tdnd_pid")
# BASELINE: an earlier build of tdnd beside this one (steered queries only), so that a
# change's cost on the query path is one ratio from one interleaved run.
baseline_port=""
if [ -n "${BASELINE:-}" ]; then
    baseline_port=$(free_port)
    SWIFT_BACKTRACE=enable=no "$BASELINE" serve --config tdnd.yaml --listen "127.0.0.1:$baseline_port" \
        --threads "$THREADS" --status off --log-level warning >"$work/baseline.log" 2>&1 &
    baseline_pid=$!; pids+=("$baseline_pid")
fi
gdnsd -c "$work/gdnsd" start >"$work/gdnsd.log" 2>&1 &
gdnsd_pid=$!; pids+=("$gdnsd_pid")
pdns_server --config-dir="$work" >"$work/pdns.log" 2>&1 &
pdns_pid=$!; pids+=("$pdns_pid")
for port in $tdnd_port $gdnsd_port $pdns_port $baseline_port; do
    # gdnsd compiles its maps from the whole database at start: allow it a minute.
    for _ in $(seq 300); do dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 tdn.example SOA 2>/dev/null | grep -q hostmaster && break; sleep 0.2; done
done
for name in tdnd gdnsd pdns; do
    port_var="${name}_port"
    echo "$name: $(dig +short +subnet=5.9.1.0/24 -p "${!port_var}" @127.0.0.1 llama-13b.tdn.example A | tr '\n' ' ') (5.9.1.0/24)  $(dig +short +subnet=8.8.8.0/24 -p "${!port_var}" @127.0.0.1 llama-13b.tdn.example A | tr '\n' ' ') (8.8.8.0/24)"
done

run() { # label port pid file
    local before after out completed qps cpu
    before=$(cpu_ticks "$3")
    out=$(dnsperf -B -s 127.0.0.1 -p "$2" -d "$4" -l "$DURATION" -c "$CLIENTS" -T 2 -q 200 2>&1)
    after=$(cpu_ticks "$3")
    completed=$(echo "$out" | awk '/Queries completed:/ {print $3}')
    qps=$(echo "$out" | awk '/Queries per second:/ {print $4}')
    cpu=$(echo "($after - $before) / $ticks_per_second * 1000000 / $completed" | bc -l)
    echo "$1 $qps $cpu" >> "$work/results"
    printf '  %-13s %10.0f q/s  %6.2f us CPU/query  %s\n' "$1" "$qps" "$cpu" "$(echo "$out" | awk '/Response codes:/ {$1=$2=""; print}')"
}
echo "dnsperf -B: $ROUNDS rounds x ${DURATION}s, $CLIENTS clients, 50000 queries with per-query ECS, servers on $THREADS threads"
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    run tdnd-static "$tdnd_port" "$tdnd_pid" "$work/static.bin"
    run tdnd-steered "$tdnd_port" "$tdnd_pid" "$work/steered.bin"
    [ -z "$baseline_port" ] || run baseline-steered "$baseline_port" "$baseline_pid" "$work/steered.bin"
    run gdnsd-geoip "$gdnsd_port" "$gdnsd_pid" "$work/steered.bin"
    run pdns-geoip "$pdns_port" "$pdns_pid" "$work/steered.bin"
done
python3 - "$work/results" <<'PY'
import statistics, sys
data = {}
for name, qps, cpu in (line.split() for line in open(sys.argv[1])):
    data.setdefault(name, ([], []))
    data[name][0].append(float(qps)); data[name][1].append(float(cpu))
print(f"\n{'server':14}{'QPS min':>10}{'median':>10}{'max':>10}{'CPU us/q (median)':>20}")
for name, (q, c) in data.items():
    print(f"{name:14}{min(q):10.0f}{statistics.median(q):10.0f}{max(q):10.0f}{statistics.median(c):20.2f}")
med = {name: (statistics.median(q), statistics.median(c)) for name, (q, c) in data.items()}
s = med["tdnd-steered"]
print()
for other in ("tdnd-static", "gdnsd-geoip", "pdns-geoip", "baseline-steered"):
    if other not in med: continue
    print(f"tdnd-steered/{other}: QPS {s[0] / med[other][0]:.2f}, CPU per query {s[1] / med[other][1]:.2f}")
PY
