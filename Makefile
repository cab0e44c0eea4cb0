# TDN DNS — the two commands of the README:
#   make run    build and run tdnd on the bundled demo config (tdnd.yaml, zones/)
#   make test   run the test suite
# Both install what they need from Debian first.

BUILD_PACKAGES := libldns-dev libmaxminddb-dev libsqlite3-dev pkg-config
TEST_PACKAGES := dnsutils knot-dnsutils
SWIFT ?= swift

.PHONY: run test deps test-deps build release check bench clean

deps:
	@scripts/install-deps.sh $(BUILD_PACKAGES)

test-deps: deps
	@scripts/install-deps.sh $(TEST_PACKAGES)

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product tdnd

run: release
	.build/release/tdnd serve --config tdnd.yaml

check: build
	.build/debug/tdnd check --config tdnd.yaml

test: test-deps
	SWIFT_BACKTRACE=enable=no $(SWIFT) test

bench: release
	bench/dns.sh

clean:
	rm -rf .build
