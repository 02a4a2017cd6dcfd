#!/usr/bin/env bash
# Control-plane benchmarks: builds squib (plain, stripped, and stripped
# without cgo), a bare net/http baseline and apibench into a temporary
# directory, runs apibench against them and the in-process handler
# benchmarks, and prints markdown. Figures are recorded, never asserted.
#
# Usage: bench/run.sh [output-file]
# Environment: N (start-up runs, default 50), REQUESTS (per latency case,
# default 20000), BENCHCOUNT (go test -count, default 3).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
n=${N:-50}
requests=${REQUESTS:-20000}
count=${BENCHCOUNT:-3}
out=${1:-}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

main() {
	echo "## Control-plane run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo
	echo "- nproc: $(nproc); kernel: $(uname -r); $(go version)"
	echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	local dirty=""
	if [[ -n $(git status --porcelain 2>/dev/null) ]]; then
		dirty=" + uncommitted or untracked changes"
	fi
	echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty"
	echo

	# The three builds differ only in flags; the stripped cgo build is the
	# one measured in full. CGO_ENABLED=0 shows what dynamic linking (net
	# pulls in libc through cgo) costs at start-up and in resident memory.
	go build -o "$tmp/squib-plain" ./cmd/squib
	go build -trimpath -ldflags='-s -w' -o "$tmp/squib" ./cmd/squib
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp/squib-static" ./cmd/squib
	go build -trimpath -ldflags='-s -w' -o "$tmp/baseline" ./bench/baseline
	go build -o "$tmp/apibench" ./bench/apibench

	echo "### Binary sizes"
	echo
	echo "| build | command | bytes | linking |"
	echo "|---|---|---|---|"
	size_row plain "go build ./cmd/squib" "$tmp/squib-plain"
	size_row stripped "go build -trimpath -ldflags='-s -w' ./cmd/squib" "$tmp/squib"
	size_row "stripped, no cgo" "CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' ./cmd/squib" "$tmp/squib-static"
	size_row "baseline (bench/baseline)" "go build -trimpath -ldflags='-s -w' ./bench/baseline" "$tmp/baseline"
	echo

	section "squib, stripped build (full run)" -squib "$tmp/squib" -n "$n" -requests "$requests"
	section "squib, stripped build, --level Off (what per-request logging costs)" -squib "$tmp/squib" -only latency -requests "$requests" -args "--level Off"
	section "squib, plain build" -squib "$tmp/squib-plain" -n "$n" -only startup,rss
	section "squib, stripped, CGO_ENABLED=0" -squib "$tmp/squib-static" -n "$n" -only startup,rss
	section "baseline: bare net/http on a Unix socket (the Go floor)" -squib "$tmp/baseline" -n "$n" -requests "$requests"

	echo "## In-process handler benchmarks"
	echo
	echo '```'
	echo "\$ go test -run '^\$' -bench . -benchmem -count $count ./internal/api/"
	go test -run '^$' -bench . -benchmem -count "$count" ./internal/api/
	echo '```'
}

size_row() {
	local link=static
	# Only a dynamically linked binary names the ELF interpreter.
	if grep -q 'ld-linux' "$3"; then
		link=dynamic
	fi
	echo "| $1 | \`$2\` | $(stat -c %s "$3") | $link |"
}

section() {
	local title=$1
	shift
	echo "## $title"
	echo
	local cmd="" a
	for a in "$@"; do
		if [[ $a == *" "* ]]; then cmd+=" '$a'"; else cmd+=" $a"; fi
	done
	echo "\`apibench$cmd\`"
	echo
	"$tmp/apibench" "$@"
}

if [[ -n $out ]]; then
	main | tee "$out"
else
	main
fi
