#!/usr/bin/env bash
# The test suite: formatting, vet, every test (namespace tests need root;
# under CI=true they run rather than skip), and the race detector on the
# pure state machines.
set -euo pipefail
cd "$(dirname "$0")/.."
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
go vet ./...
go test -count=1 -timeout 60m ./...
go test -count=1 -race -timeout 20m ./ackmerge/... ./failover/... ./netstackio/packet/...
