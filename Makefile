# squib: common tasks. `make test` is what CI runs (see .ci/run).
GO ?= go
BIN ?= bin/squib

.PHONY: build test unit sdkcompat e2e lint fuzz bench demo api-demo clean

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/squib
	CGO_ENABLED=0 $(GO) build -o $(dir $(BIN))squib-jailer ./cmd/squib-jailer
	CGO_ENABLED=0 $(GO) build -o $(dir $(BIN))squib-uffd-handler ./cmd/squib-uffd-handler

# Every test: formatting and vet, the unit and integration tests of the main
# module (race detector on), the Firecracker Go SDK compatibility module, and
# the end-to-end suite that boots real Linux guests under KVM (directly where
# /dev/kvm is hardware-backed, else inside the nested KVM sandbox).
test: lint unit sdkcompat e2e

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./tests/e2e/
	cd tests/sdkcompat && $(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...

sdkcompat:
	cd tests/sdkcompat && $(GO) test -count=1 ./...

# The KVM end-to-end suite, then firecracker-go-sdk's Machine.Start booting a
# guest, both through the KVM harness (tests/sandbox).
e2e:
	bash tests/sandbox/run.sh -v
	SQUIB_TEST_PKG=./tests/sdkcompat bash tests/sandbox/run.sh -v -run TestMachineStartBootsGuest

# Short runs of every fuzz target (FUZZTIME each).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s $$pkg || exit 1; \
	  done; \
	done

bench:
	bash bench/run.sh

# Boots the default guest (Debian's kernel and a small initramfs that prints
# a banner and system facts) and shows its console.
demo:
	bash tests/sandbox/demo.sh

# Drives squib over its API with curl, showing each answer.
api-demo: build
	bash scripts/demo.sh $(BIN)

clean:
	rm -rf bin
