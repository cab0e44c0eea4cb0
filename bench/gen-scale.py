#!/usr/bin/env python3
"""Generates a network-scale tdnd configuration for bench/scale.sh.

    bench/gen-scale.py --sites 10000 --out DIR --geoip CITY.mmdb --probe 127.0.0.1:PORT \
        --dns-port P --status-port S [--seed 1]

writes DIR/tdnd.yaml, DIR/zones/tdn.example.zone and DIR/zones/tdn.example.policy.yaml:

- sites over the world: 80 % around the world's large metros (a few degrees of spread), 20 %
  anywhere in a random country (its centroid from geo/countries.csv, spread wider); tiers
  90 / 9 / 1 % edge / regional / central; edges serve up to 13B, regionals 70B, centrals 405B;
- jurisdictions: one per country, EU countries in `eu`, and the rules EU → EU, US → US;
- 10 models (one EU-only) and two tenants (one EU-only, one with two models);
- every site probed over TCP at --probe (a local listener: every probe succeeds until forced);
- operator networks bench-0 … bench-199, each a /24 of 100.64.0.0/10 placed exactly at one edge
  site, so the benchmark has clients whose answer contains a known site.

The sample sites and their networks are listed in DIR/samples.csv (site,prefix,ipv4), every
site in DIR/sites.csv (site,lat,lon,ipv4).
"""
import argparse
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EU = {"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT",
      "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE"}

# (lat, lon, country) of large metros: where inference capacity clusters.
METROS = [
    (40.7, -74.0, "US"), (34.1, -118.2, "US"), (41.9, -87.6, "US"), (29.8, -95.4, "US"), (32.8, -96.8, "US"),
    (37.8, -122.4, "US"), (47.6, -122.3, "US"), (39.0, -77.5, "US"), (33.7, -84.4, "US"), (25.8, -80.2, "US"),
    (43.7, -79.4, "CA"), (45.5, -73.6, "CA"), (19.4, -99.1, "MX"), (-23.5, -46.6, "BR"), (-22.9, -43.2, "BR"),
    (-34.6, -58.4, "AR"), (4.7, -74.1, "CO"), (-33.4, -70.6, "CL"), (51.5, -0.1, "GB"), (53.5, -2.2, "GB"),
    (48.9, 2.4, "FR"), (45.8, 4.8, "FR"), (50.1, 8.7, "DE"), (52.5, 13.4, "DE"), (48.1, 11.6, "DE"),
    (52.4, 4.9, "NL"), (50.8, 4.4, "BE"), (40.4, -3.7, "ES"), (41.4, 2.2, "ES"), (45.5, 9.2, "IT"),
    (41.9, 12.5, "IT"), (48.2, 16.4, "AT"), (52.2, 21.0, "PL"), (59.3, 18.1, "SE"), (60.2, 24.9, "FI"),
    (53.3, -6.3, "IE"), (38.7, -9.1, "PT"), (47.4, 8.5, "CH"), (55.8, 37.6, "RU"), (41.0, 29.0, "TR"),
    (30.0, 31.2, "EG"), (6.5, 3.4, "NG"), (-1.3, 36.8, "KE"), (-26.2, 28.0, "ZA"), (25.2, 55.3, "AE"),
    (24.7, 46.7, "SA"), (19.1, 72.9, "IN"), (28.6, 77.2, "IN"), (12.97, 77.6, "IN"), (13.1, 80.3, "IN"),
    (1.35, 103.8, "SG"), (13.8, 100.5, "TH"), (-6.2, 106.8, "ID"), (14.6, 121.0, "PH"), (3.1, 101.7, "MY"),
    (22.3, 114.2, "HK"), (25.0, 121.5, "TW"), (31.2, 121.5, "CN"), (39.9, 116.4, "CN"), (23.1, 113.3, "CN"),
    (37.6, 127.0, "KR"), (35.7, 139.7, "JP"), (34.7, 135.5, "JP"), (-33.9, 151.2, "AU"), (-37.8, 145.0, "AU"),
    (-36.8, 174.8, "NZ"),
]

MODELS = [
    ("qwen-1b", "1b"), ("llama-3b", "3b"), ("mistral-7b", "7b"), ("llama-8b", "8b"), ("eurollm-9b", "9b"),
    ("llama-13b", "13b"), ("codellama-34b", "34b"), ("llama-70b", "70b"), ("falcon-180b", "180b"),
    ("llama-405b", "405b"),
]


def countries():
    table = {}
    with open(os.path.join(ROOT, "geo", "countries.csv")) as handle:
        for line in handle:
            if line.startswith("#") or line.startswith("code,") or not line.strip():
                continue
            code, _continent, lat, lon, _name = line.rstrip("\n").split(",", 4)
            table[code] = (float(lat), float(lon))
    return table


def clamp(value, low, high):
    return max(low, min(high, value))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--geoip", required=True)
    parser.add_argument("--probe", required=True, help="host:port of the TCP listener every site is probed at")
    parser.add_argument("--dns-port", type=int, default=5353)
    parser.add_argument("--status-port", type=int, default=9153)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    centroids = countries()
    codes = sorted(centroids)
    os.makedirs(os.path.join(args.out, "zones"), exist_ok=True)

    sites = []
    for index in range(args.sites):
        if rng.random() < 0.8:
            lat, lon, country = rng.choice(METROS)
            lat += rng.gauss(0, 1.5)
            lon += rng.gauss(0, 1.5)
        else:
            country = rng.choice(codes)
            lat, lon = centroids[country]
            lat += rng.gauss(0, 3)
            lon += rng.gauss(0, 3)
        draw = rng.random()
        tier = "edge" if draw < 0.90 else "regional" if draw < 0.99 else "central"
        sites.append((f"s{index:05d}", tier, round(clamp(lat, -89, 89), 4),
                      round(((lon + 180) % 360) - 180, 4), country, index))
    used = sorted({site[4] for site in sites} | {"US"} | EU)

    def jurisdiction(country):
        return "eu" if country in EU else country.lower()

    lines = ["# Generated by bench/gen-scale.py: a network-scale policy for bench/scale.sh.", "zone: tdn.example",
             "jurisdictions:", "  eu: [" + ", ".join(sorted(EU)) + "]"]
    for code in used:
        if code not in EU:
            lines.append(f"  {code.lower()}: [{code}]")
    lines += ["rules:", "  - {clients-in: eu, served-in: [eu]}", "  - {clients-in: us, served-in: [us]}",
              "unknown-location: {served-in: [eu, us]}",
              "denial: {mode: empty, ttl: 5}",
              "probe-defaults:",
              f"  all: {{tcp: \"{args.probe}\", interval: {args.interval}, timeout: 2, rise: 1, fall: 1}}",
              "health: {when-all-down: last-known-good, unsettled-ttl: 5}",
              "sites:"]
    for site_id, tier, lat, lon, country, index in sites:
        size = {"edge": "13b", "regional": "70b", "central": "405b"}[tier]
        v4 = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
        lines.append(f"  {site_id}: {{tier: {tier}, location: {{lat: {lat}, lon: {lon}, country: {country}}}, "
                     f"jurisdiction: {jurisdiction(country)}, ipv4: [{v4}], ipv6: [\"2001:db8:{index:x}::1\"], "
                     f"max-model: {size}}}")
    lines.append("models:")
    for name, size in MODELS:
        extra = ", served-in: [eu]" if name == "eurollm-9b" else ""
        lines.append(f"  {name}: {{size: {size}, ttl: 30, answers: 2{extra}}}")
    lines += ["tenants:", "  acme: {served-in: [eu]}", "  globex: {models: [mistral-7b, llama-70b]}", "networks:"]
    edges = [site for site in sites if site[1] == "edge"]
    samples = rng.sample(edges, min(200, len(edges)))
    with open(os.path.join(args.out, "samples.csv"), "w") as handle:
        for number, (site_id, _tier, lat, lon, country, index) in enumerate(samples):
            prefix = f"100.{64 + number // 256}.{number % 256}.0/24"
            lines.append(f"  - {{name: bench-{number}, prefix: {prefix}, country: {country}, lat: {lat}, lon: {lon}}}")
            handle.write(f"{site_id},{prefix},10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}\n")
    with open(os.path.join(args.out, "sites.csv"), "w") as handle:
        for site_id, _tier, lat, lon, _country, index in sites:
            handle.write(f"{site_id},{lat},{lon},10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}\n")
    with open(os.path.join(args.out, "zones", "tdn.example.policy.yaml"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "zones", "tdn.example.zone"), "w") as handle:
        handle.write("$ORIGIN tdn.example.\n$TTL 300\n"
                     "@ 3600 IN SOA ns1 hostmaster 1 7200 900 1209600 60\n"
                     "  3600 IN NS ns1\nns1 IN A 192.0.2.53\n")
    with open(os.path.join(args.out, "tdnd.yaml"), "w") as handle:
        handle.write(f"zones: zones\npolicy: zones/tdn.example.policy.yaml\ngeoip: {os.path.abspath(args.geoip)}\n"
                     f"listen: [127.0.0.1:{args.dns_port}]\nstatus: 127.0.0.1:{args.status_port}\n"
                     "threads: 1\nwatch-interval: 0\nstate-dir: state\n"
                     "admin-token: bench-admin-token-0123456789\nprobe-start-timeout: 120\n"
                     "probe-concurrency: 512\n")


if __name__ == "__main__":
    main()
