# aopguard build, test and lint. `make test` is what CI runs (via .ci/run).
GO          ?= go
# go.mod needs Go 1.27; fetch that toolchain through the module proxy whatever
# the machine's own Go is (its go env may say GOTOOLCHAIN=local).
export GOTOOLCHAIN := go1.27.3
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOBIN       := $(shell $(GO) env GOPATH)/bin

FUZZTIME    ?= 10s
# package:target pairs run by `make fuzz`.
FUZZ        := config:FuzzParse certs:FuzzParseBundle tlsconfig:FuzzAllowRules \
               proxy:FuzzRewriteHeaders proxy:FuzzHostOnly internal/h1:FuzzServer
# GOOS/GOARCH pairs `make cross` builds (certs and check run on laptops).
CROSS       := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64

.PHONY: build cross test lint fuzz soak bench clean

## build: a static aopguard binary in ./aopguard
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o aopguard ./cmd/aopguard

## cross: build every package for each of CROSS (static, no cgo)
cross:
	@set -e; for p in $(CROSS); do \
	  echo "build $$p"; \
	  CGO_ENABLED=0 GOOS=$${p%%/*} GOARCH=$${p#*/} $(GO) build -trimpath ./...; \
	done

## test: vet, then every test with the race detector; lists the tests
## skipped because a tool they drive (curl, openssl, nginx, promtool) is
## not installed (under CI, CI=true, those fail instead)
SKIPS := $(CURDIR)/.test-skips
test:
	$(GO) vet ./...
	@rm -f $(SKIPS)
	@AOPGUARD_SKIPPED_TOOLS=$(SKIPS) $(GO) test -race -count=1 -timeout 10m ./...; status=$$?; \
	  if [ -s $(SKIPS) ]; then \
	    echo "SKIPPED: $$(wc -l < $(SKIPS)) tests, because a tool they drive is not installed (.ci/run installs them):"; \
	    sort $(SKIPS) | sed 's/^/  /'; \
	  fi; \
	  rm -f $(SKIPS); exit $$status

## lint: formatting, vet and staticcheck (installed from the module proxy)
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	@test -x $(GOBIN)/staticcheck || $(GO) install $(STATICCHECK)
	$(GOBIN)/staticcheck ./...

## fuzz: each fuzz target for FUZZTIME (CI: 5s each; new failures land in testdata/fuzz)
fuzz:
	@set -e; for f in $(FUZZ); do \
	  pkg=$${f%%:*}; target=$${f#*:}; \
	  echo "fuzz $$target ($$pkg, $(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) ./$$pkg; \
	done
# The accept path: first bytes of a connection, PROXY headers included.
FUZZ += tlsconfig:FuzzPreamble

## soak: mixed hostile and valid traffic against the real binary under faults (a few minutes)
soak:
	$(GO) test -tags soak -run TestSoak -count=1 -timeout 15m -v ./cmd/aopguard

## bench: hot-path micro-benchmarks (no assertions on timing)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -f aopguard
