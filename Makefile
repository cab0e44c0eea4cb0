# TDN DNS — the two commands of the README:
#   make run    build and run tdnd on the bundled demo config (tdnd.yaml, zones/)
#   make test   run the test suite
# Both install what they need from Debian first.

BUILD_PACKAGES := libldns-dev libmaxminddb-dev libsqlite3-dev pkg-config
TEST_PACKAGES := dnsutils knot-dnsutils sqlite3 postgresql
GEO_PACKAGES := tor-geoipdb python3
GEOIP := build/geoip/tor-country.mmdb
SWIFT ?= swift

.PHONY: run test deps test-deps geoip build release check bench clean lint format sim

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
	$(SWIFT) build -c release

# The demo: pretend vLLM edges for the 13 sites on 127.0.0.1:9100 (the policy probes them), the
# token ledger on 127.0.0.1:9154, then tdnd in the foreground; the others stop with it.
DEMO_SITES := fra1,par1,ams1,nyc1,sfo1,tyo1,sin1,de-sov1,ash1,osa1,dub1,dfw1,nrt1
DEMO_MODELS := llama-13b,mistral-7b,llama-70b,eurollm-9b
run: release geoip
	@.build/release/tdn-fake-edge --port 9100 --sites $(DEMO_SITES) --models $(DEMO_MODELS) & \
	  edges=$$!; .build/release/tdnd ledger serve --config tdnd.yaml & \
	  ledger=$$!; trap 'kill $$edges $$ledger 2>/dev/null' EXIT INT TERM; \
	  .build/release/tdnd serve --config tdnd.yaml

check: build geoip
	.build/debug/tdnd check --config tdnd.yaml

# In parallel: the CPU-bound tests take turns on one thread of their own and the tests that
# measure time each have one (the `.cpuBound` and `.timing` traits in TDNTestSupport), so
# neither starves the cooperative pool the rest share.
test: test-deps geoip
	SWIFT_BACKTRACE=enable=no $(SWIFT) test

# Formatting (.swift-format: 4 spaces, 120 columns), checked in CI before the tests.
SWIFT_SOURCES := Sources Tests Package.swift
lint:
	$(SWIFT) format lint --recursive --strict --parallel $(SWIFT_SOURCES)

format:
	$(SWIFT) format --in-place --recursive --parallel $(SWIFT_SOURCES)

bench: release geoip
	bench/dns.sh

clean:
	rm -rf .build build

# The simulator's checked-in scenarios (sim/*.yaml), with the generated 1,000-site network.
sim: geoip
	python3 scripts/make-sim-network.py --sites 1000 --seed 1 --out build/sim/network-1000.policy.yaml
	$(SWIFT) build -c release --product tdnd
	for scenario in sim/*.yaml; do .build/release/tdnd simulate $$scenario || exit 1; done
	.build/release/tdnd simulate sim/demo.yaml --trace fra1 --trace-file build/sim/demo-fra1.csv > /dev/null
	python3 scripts/plot-sim.py build/sim/demo-fra1.csv --site fra1 --out docs/sim-demo-fra1.svg
