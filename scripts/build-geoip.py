#!/usr/bin/env python3
"""Builds a MaxMind-format (GeoLite2-Country-shaped, with coordinates) database for tdnd.

From Debian's tor-geoipdb ranges (real IP → country data for all of IPv4 and IPv6):
    scripts/build-geoip.py --tor /usr/share/tor --out build/geoip/tor-country.mmdb
From a small CSV of networks (tests): `network,country` lines, e.g. `5.9.0.0/16,DE`:
    scripts/build-geoip.py --networks nets.csv --out test.mmdb

Each country gets its continent and an approximate centroid from geo/countries.csv; codes that
are not countries (A1, AP, EU, ??) are left out, so those addresses are not located.
"""
import argparse
import ipaddress
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmdb_writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def countries(path):
    table = {}
    with open(path) as handle:
        for line in handle:
            if line.startswith("#") or line.startswith("code,") or not line.strip():
                continue
            code, continent, lat, lon, name = line.rstrip("\n").split(",", 4)
            table[code] = mmdb_writer.country_record(code, continent, float(lat), float(lon), name)
    return table


def tor_ranges(path, version):
    """(first, last, country) from a tor geoip file; v4 lines are integers, v6 lines addresses."""
    with open(path) as handle:
        for line in handle:
            if not line.strip() or line.startswith("#"):
                continue
            first, last, code = line.strip().split(",")
            if version == 4:
                yield int(first), int(last), code
            else:
                yield int(ipaddress.IPv6Address(first)), int(ipaddress.IPv6Address(last)), code


def merged(ranges):
    """Joins touching ranges of the same country: fewer, larger networks."""
    current = None
    for first, last, code in sorted(ranges):
        if current and current[2] == code and current[1] + 1 >= first:
            current = (current[0], max(current[1], last), code)
            continue
        if current:
            yield current
        current = (first, last, code)
    if current:
        yield current


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tor", help="directory with tor's geoip and geoip6 files")
    parser.add_argument("--networks", help="CSV of network,country lines")
    parser.add_argument("--countries", default=os.path.join(ROOT, "geo", "countries.csv"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    table = countries(args.countries)
    # City layout (location.latitude/longitude), with country centroids for coordinates; gdnsd
    # and others look for "City" in the type before they use coordinates.
    writer = mmdb_writer.Writer(database_type="TDN-City-Country-Centroids", description="tdnd database: countries with centroid coordinates")
    inserted = skipped = 0
    if args.tor:
        for version, name in ((4, "geoip"), (6, "geoip6")):
            klass = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            for first, last, code in merged(tor_ranges(os.path.join(args.tor, name), version)):
                if code not in table:
                    skipped += 1
                    continue
                for network in ipaddress.summarize_address_range(klass(first), klass(last)):
                    writer.insert(network, table[code])
                    inserted += 1
    if args.networks:
        with open(args.networks) as handle:
            for line in handle:
                if not line.strip() or line.startswith("#"):
                    continue
                network, code = [part.strip() for part in line.split(",")[:2]]
                writer.insert(network, table[code])
                inserted += 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    writer.write(args.out + ".tmp")
    os.replace(args.out + ".tmp", args.out)
    print(f"{args.out}: {inserted} networks ({skipped} ranges without a country left out)")


if __name__ == "__main__":
    main()
