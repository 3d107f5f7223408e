# Every target runs on the Node pinned in package.json (node_modules/.bin/node), never the system Node.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

# Debian packages: the gateway's own (nftables, iproute2, ulogd2, openssl for the UI certificate) and the test
# peers (mbpoll, iperf3).
OS_PACKAGES := nftables iproute2 ulogd2 ulogd2-json openssl mbpoll iperf3 iputils-ping procps chromium

.PHONY: all deps os-deps node-deps build lint typecheck test test-unit test-integration demo demo-down bench bench-deps clean install uninstall deb

all: build

os-deps:
	@bash systemd/install-deps.sh $(OS_PACKAGES)

# npm itself may run on the system Node; it only unpacks the lockfile, including the pinned `node` package.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: node_modules/.package-lock.json
	@test "$$(node --version | cut -d. -f1)" = v24 || { echo "pinned Node 24 missing from node_modules/.bin" >&2; exit 1; }

deps: os-deps node-deps

build: node-deps
	tsc -p tsconfig.build.json

typecheck: node-deps
	tsc -p tsconfig.json --noEmit

lint: node-deps
	eslint .
	prettier --check .

test-unit: node-deps
	vitest run --project unit

test-integration: deps build
	vitest run --project integration

# The JSON report feeds the plain "N passed, N failed" line CI reads; vitest's own exit code still decides.
test: deps lint typecheck build
	@mkdir -p test-output
	status=0; vitest run --reporter=default --reporter=json --outputFile.json=test-output/vitest.json || status=$$?; \
	  node test/summary.ts test-output/vitest.json || true; exit $$status

demo: deps build
	bash test/lab/demo.sh

demo-down: node-deps
	node bin/sluice.js lab down || true

# Each bench measures its baseline in the same run and prints ratios; none is a test. `make bench` runs all.
# bench/modbus builds its C reference relay (bench/reference-relay.c) with gcc, needed by no test.
BENCHES := compile logs apply modbus opcua ui
BENCH_PACKAGES := gcc libc6-dev

bench-deps: deps
	@bash systemd/install-deps.sh $(BENCH_PACKAGES)

bench: bench-deps build
	@for b in $(BENCHES); do echo "=== bench/$$b.ts"; node bench/$$b.ts || exit $$?; done

bench-%: bench-deps build
	node bench/$*.ts

clean:
	rm -rf dist test-output

# Install on a gateway (docs/install.md). DESTDIR, PREFIX, APPDIR, … are passed through to systemd/install.sh;
# with DESTDIR empty on a systemd host it also creates the user and enables the units. PURGE=1 on uninstall
# removes the configuration and the state too.
# A fresh Debian has no npm, and the build starts with `npm ci`: install Debian's `npm` first (npm 9 on
# Node 18 is enough to unpack the lockfile, the pinned Node 24 included; the app never runs on Node 18).
# Build only after that, hence the sub-make instead of a `build` prerequisite.
INSTALL_DEPS ?= bash systemd/install-deps.sh
install:
	@command -v npm >/dev/null || $(INSTALL_DEPS) npm
	@command -v npm >/dev/null || { echo "make install: npm is missing (apt-get install npm)" >&2; exit 1; }
	@$(MAKE) --no-print-directory build
	bash systemd/install.sh install

uninstall:
	bash systemd/install.sh uninstall

# The Debian package of this checkout (systemd/deb.sh): out/sluice_VERSION_ARCH.deb. `apt install ./out/…deb`
# on a gateway does what `make install` does, and `apt purge sluice` what `make uninstall PURGE=1` does.
# Built from a fresh dist/, so no stale output of a deleted source file ships.
deb: node-deps
	rm -rf dist
	@$(MAKE) --no-print-directory build
	bash systemd/deb.sh out
