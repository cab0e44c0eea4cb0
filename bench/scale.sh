#!/usr/bin/env bash
# Steering at network scale: 1,000 and 10,000 generated sites (bench/gen-scale.py) with a real
# GeoLite2-City database, all probed over TCP by the running server against a local listener.
# For each size it prints the full compile time and peak RSS of `tdnd check`, then, from the
# running `tdnd serve`: the time from `force SITE down` (admin API) to the first DNS answer
# without that site, p50 and p99 over CHANGES changes, the steering rebuild CPU per change (the
# compile thread's, from /metrics), and the time a burst of 5 % of the sites (500 of 10,000)
# going down in one request takes to leave the answers.
#
#   bench/scale.sh                    # SIZES="1000 10000" CHANGES=25 BURST=0 (5 %)
#
# The City database is PyPI's maxminddb-geolite2 (2018.703, a GeoLite2-City.mmdb of 56 MB, ©
# MaxMind, CC BY-SA 4.0), downloaded once into build/bench/ and never committed.
source "$(dirname "$0")/lib.sh"
SIZES=${SIZES:-"1000 10000"}
CHANGES=${CHANGES:-25}
BURST=${BURST:-0}

scripts/install-deps.sh python3 python3-pip time libldns-dev libmaxminddb-dev libsqlite3-dev pkg-config
CITY=build/bench/GeoLite2-City.mmdb
if [ ! -f "$CITY" ]; then
    mkdir -p build/bench/download
    python3 -m pip download --no-deps --no-binary :all: maxminddb-geolite2==2018.703 -d build/bench/download \
        >/dev/null 2>&1 || python3 -m pip download --no-deps maxminddb-geolite2==2018.703 -d build/bench/download
    tar -xzf build/bench/download/maxminddb-geolite2-2018.703.tar.gz -C build/bench/download
    cp build/bench/download/maxminddb-geolite2-2018.703/_maxminddb_geolite2/GeoLite2-City.mmdb "$CITY"
fi
swift build -c release --product tdnd >/dev/null

SWIFT_BACKTRACE=enable=no python3 bench/scale.py --tdnd "$(pwd)/.build/release/tdnd" --city "$(readlink -f "$CITY")" \
    --work "$work" --sizes $SIZES --changes "$CHANGES" --burst "$BURST"
