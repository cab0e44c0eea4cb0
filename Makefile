# TDN DNS — the two commands of the README:
#   make run    build and run tdnd on the bundled demo config (tdnd.yaml, zones/)
#   make test   run the test suite
# Both install what they need from Debian first.

BUILD_PACKAGES := libldns-dev libmaxminddb-dev libsqlite3-dev pkg-config
TEST_PACKAGES := dnsutils knot-dnsutils
GEO_PACKAGES := tor-geoipdb python3
GEOIP := build/geoip/tor-country.mmdb
SWIFT ?= swift

.PHONY: run test deps test-deps geoip build release check bench clean

deps:
	@scripts/install-deps.sh $(BUILD_PACKAGES)

test-deps: deps
	@scripts/install-deps.sh $(TEST_PACKAGES)

# The demo's geo database: Debian's tor-geoipdb ranges (real IP → country data) as an MMDB.
geoip: $(GEOIP)

$(GEOIP): scripts/build-geoip.py scripts/mmdb_writer.py geo/countries.csv
	@scripts/install-deps.sh $(GEO_PACKAGES)
	python3 scripts/build-geoip.py --tor /usr/share/tor --out $(GEOIP)

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product tdnd

run: release geoip
	.build/release/tdnd serve --config tdnd.yaml

check: build geoip
	.build/debug/tdnd check --config tdnd.yaml

test: test-deps geoip
	SWIFT_BACKTRACE=enable=no $(SWIFT) test

bench: release geoip
	bench/dns.sh

clean:
	rm -rf .build build
