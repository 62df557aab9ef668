# sluice: `make test` is what CI runs (via .ci/run) on a fresh Debian machine.
GO      ?= go
SLUICE  := bin/sluice
PKGS    := ./...

.PHONY: all build test deps vet fmt-check unit fixtures bench bench-relay bench-postfix fuzz clean

all: build

build:
	$(GO) build -o $(SLUICE) ./cmd/sluice

# test: formatting, vet, the race-enabled unit tests, then the shipped
# fixtures replayed against the shipped rules with every rule required to fire.
test: deps fmt-check vet unit fixtures

# deps: what the end-to-end tests need from Debian: swaks (a real SMTP
# client), redis-server (the shared store; the tests start their own) and
# python3-spf (pyspf, the SPF implementation mailauth's results must agree
# with, over dnspython, which it only prefers) and python3-dkim (a DKIM and
# ARC signer and verifier that is not ours; its arcsign command is how we
# see it is there). Each entry is what-to-test:package, the test a command
# or a file.
DEB_DEPS := swaks:swaks redis-server:redis-server /usr/lib/python3/dist-packages/spf.py:python3-spf /usr/lib/python3/dist-packages/dns/resolver.py:python3-dnspython arcsign:python3-dkim chromium:chromium
deps:
	@missing=""; for d in $(DEB_DEPS); do t=$${d%%:*}; command -v $$t >/dev/null 2>&1 || [ -e "$$t" ] || missing="$$missing $${d#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
		$$SUDO apt-get install -y -q $$missing >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $$missing >/dev/null; }; \
	fi

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# unit: the race-enabled tests; bin/unit.json keeps every event, and the
# terminal gets each package's result, the output of every failed test and
# the tests that took 20 s or more (internal/testreport). Then the tests
# of the patched go-smtp (third_party/go-smtp, a module of its own), but
# for TestServerAcceptErrorHandling, which races upstream: its Close can
# come before Serve sees the listener's permanent error (1 run in ~50).
unit:
	@mkdir -p bin
	@$(GO) build -o bin/testreport ./internal/testreport
	SLUICE_REQUIRE_DEPS=1 $(GO) test -race -count=1 -json $(PKGS) | tee bin/unit.json | bin/testreport
	cd third_party/go-smtp && $(GO) test -race -count=1 -skip TestServerAcceptErrorHandling ./...

fixtures: build
	$(SLUICE) check rules.d
	$(SLUICE) test --rules rules.d --coverage --junit bin/fixtures-junit.xml examples/fixtures | tee bin/fixtures.txt
	@if grep -q '^  not fired:' bin/fixtures.txt; then echo "some default rules are not fired by any fixture"; exit 1; fi

# bench: engine and MIME benchmarks on one core, with allocations, then the
# relay end to end (bench/relay.sh: 50 clients, 10 KB, default rules, fsync).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1 -benchtime 2s ./engine ./builtins
	bash bench/relay.sh 10s

bench-relay:
	bash bench/relay.sh 10s

# bench-postfix: the same smtp-source load against a private Postfix from
# Debian and sluice, alternately, 3 pairs (bench/postfix.sh; as root).
# BENCH_ARGS=--matrix runs 10/50/200 sessions x 1/10/100 KB x smarthost/local.
BENCH_ARGS ?=
bench-postfix:
	bash bench/postfix.sh $(BENCH_ARGS)

# fuzz: a short run of every fuzz target (go test runs their seeds always).
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./engine -run '^$$' -fuzz FuzzLoad -fuzztime $(FUZZTIME)
	$(GO) test ./builtins -run '^$$' -fuzz FuzzParseBody -fuzztime $(FUZZTIME)
	$(GO) test ./builtins -run '^$$' -fuzz FuzzParseHeader -fuzztime $(FUZZTIME)
	$(GO) test ./builtins -run '^$$' -fuzz FuzzSimpleAddress -fuzztime $(FUZZTIME)
	$(GO) test ./engine -run '^$$' -fuzz FuzzMultiMatcher -fuzztime $(FUZZTIME)
	$(GO) test ./server -run '^$$' -fuzz FuzzParseReport -fuzztime $(FUZZTIME)
	$(GO) test ./server -run '^$$' -fuzz FuzzSession -fuzztime $(FUZZTIME)
	$(GO) test ./internal/smtpaddr -run '^$$' -fuzz FuzzCanonical -fuzztime $(FUZZTIME)
	$(GO) test ./internal/canon -run '^$$' -fuzz FuzzMessage -fuzztime $(FUZZTIME)

clean:
	rm -rf bin
