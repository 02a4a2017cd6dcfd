#!/usr/bin/env bash
# Traces the syscalls squib makes in the end-to-end suite and turns them
# into the default seccomp filter:
#
#   1. runs the e2e tests (tests/e2e) under `strace -f -X raw`, in the KVM
#      sandbox (tests/sandbox, with strace in L1: SQUIB_L1_STRACE=1) or
#      directly where /dev/kvm works, exactly as tests/sandbox/run.sh would;
#   2. counts, with tools/seccomp/straceagg, the syscalls and ioctl request
#      numbers of every squib process and its threads (the test binary, the
#      shells and everything else are traced too but not counted);
#   3. writes the counts to tools/seccomp/traced.txt;
#   4. regenerates internal/seccomp/default.json from traced.txt with
#      tools/seccomp/gendefault.
#
# With --check it traces nothing: it runs the suite with squib replaced by
# tools/seccomp/squibfiltered, squib with the default filter installed at
# the top of main, to show that the filter lets squib do all it does there
# (a refused syscall ends squib with exit code 148 and a log line).
#
# Usage: tools/seccomp/trace.sh [--check] [go test flags]
#   default flags: -v -run "$DEFAULT_RUN" (below); with --check: -v
# Env:
#   SQUIB_SECCOMP_TRACE_APPEND=1   add this run's counts to traced.txt as a
#                                  new section instead of replacing it
#   and those of tests/sandbox/run.sh (SQUIB_SANDBOX, SQUIB_SANDBOX_TIMEOUT...)
# Exit status: the tests' (traced.txt is written even when some failed, if
# the trace came back; check the failures before trusting it).
#
# The sandbox runs with the cache of tests/sandbox (SQUIB_SANDBOX_CACHE
# moves it; a private one keeps a concurrent run.sh from rebuilding the L1
# image under this one).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/sandbox/lib.sh
. "$HERE/../../tests/sandbox/lib.sh"

# Every test that exercises a device or an API path after boot. One boot
# of TestBootMatrix with two vCPUs brings the vCPU kick and the bzImage
# loader in.
DEFAULT_RUN='TestBlockDevices|TestNetAndMMDS|TestVsock|TestBalloon|TestDrivePatch|TestAPIBootAndCtrlAltDel|TestEntropyDevice|TestBootTimer|TestBootMatrix/bzImage-2cpu'
TRACED=$HERE/traced.txt
OUTPUT_MARK=SQUIB-SECCOMP-TRACE

if ! command -v strace >/dev/null; then
	[ "$(id -u)" -eq 0 ] || die "strace is missing: apt-get install strace"
	log "installing strace (log: $CACHE/apt.log)"
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends strace; } >"$CACHE/apt.log" 2>&1 ||
		die "apt-get install strace failed; see $CACHE/apt.log"
fi
ensure_host_packages

CHECK=0
if [ "${1:-}" = --check ]; then
	CHECK=1
	shift
fi
T0=$EPOCHREALTIME
select_mode
export SQUIB_TEST_PKG=./tests/e2e
log "mode: $MODE: $MODE_WHY"
if [ $# -eq 0 ] && [ $CHECK = 0 ]; then
	set -- -v -run "$DEFAULT_RUN"
elif [ $# -eq 0 ]; then
	set -- -v
fi
go_test_flags "$@"

W=$CACHE/seccomp
mkdir -p "$W"

if [ $CHECK = 1 ]; then
	(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -o "$W/squib" ./tools/seccomp/squibfiltered) || die "go build squibfiltered failed"
	rc=0
	case $MODE in
	direct)
		load_kernel
		GUEST_INITRD=$("$GUEST_DIR/build-initramfs.sh")
		build_go "$CACHE/direct" ./tests/e2e
		log "running ./tests/e2e (${GO_TEST_FLAGS[*]}) with the filtered squib $W/squib"
		(
			cd "$(package_dir ./tests/e2e)"
			SQUIB_TEST_MODE=direct \
				SQUIB_BIN=$W/squib \
				SQUIB_GUEST_KERNEL=$SQUIB_KERNEL_VMLINUZ \
				SQUIB_GUEST_VMLINUX=$SQUIB_KERNEL_VMLINUX \
				SQUIB_GUEST_INITRD=$GUEST_INITRD \
				SQUIB_GUEST_KERNEL_VERSION=$SQUIB_KERNEL_VERSION \
				exec "$CACHE/direct/test.bin" "${GO_TEST_FLAGS[@]}"
		) || rc=$?
		;;
	sandbox)
		L1=$("$SANDBOX_DIR/build-l1.sh" ./tests/e2e)
		load_kernel
		# a last image part whose /usr/bin/squib replaces the plain one
		R=$W/check-root
		rm -rf "$R"
		mkdir -p "$R/usr/bin"
		cp "$W/squib" "$R/usr/bin/squib"
		pack_cpio "$R" >"$W/check.cpio"
		rm -rf "$R"
		cat "$L1" "$W/check.cpio" >"$W/initramfs.cpio"
		boot_l1 "$W/initramfs.cpio" "${SQUIB_SANDBOX_TIMEOUT:-2400}" "/run-tests.sh $(shell_quote "${GO_TEST_FLAGS[@]}")" || rc=$?
		;;
	esac
	if [ $rc = 0 ]; then
		log "PASS: the suite passed with the default seccomp filter installed ($(_elapsed "$T0") s)"
	else
		log "FAIL: exit status $rc with the default seccomp filter installed; look for \"bad syscall\" in the squib logs above"
	fi
	exit $rc
fi

(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -o "$W/straceagg" ./tools/seccomp/straceagg) || die "go build straceagg failed"
STRACE_OPTS=(-f -q -X raw -s 0)

rc=0
case $MODE in
direct)
	load_kernel
	GUEST_INITRD=$("$GUEST_DIR/build-initramfs.sh")
	build_go "$CACHE/direct" ./tests/e2e
	pkgdir=$(package_dir ./tests/e2e)
	log "tracing ./tests/e2e (${GO_TEST_FLAGS[*]})"
	(
		cd "$pkgdir"
		SQUIB_TEST_MODE=direct \
			SQUIB_BIN=$CACHE/direct/squib \
			SQUIB_GUEST_KERNEL=$SQUIB_KERNEL_VMLINUZ \
			SQUIB_GUEST_VMLINUX=$SQUIB_KERNEL_VMLINUX \
			SQUIB_GUEST_INITRD=$GUEST_INITRD \
			SQUIB_GUEST_KERNEL_VERSION=$SQUIB_KERNEL_VERSION \
			exec strace "${STRACE_OPTS[@]}" -o "|$W/straceagg -exe $CACHE/direct/squib -o $W/traced.raw" \
			"$CACHE/direct/test.bin" "${GO_TEST_FLAGS[@]}"
	) || rc=$?
	# strace waits for its output pipe to close, not for the reader
	for _ in $(seq 100); do
		grep -q '^# end$' "$W/traced.raw" 2>/dev/null && break
		sleep 0.1
	done
	sed -n "s/^/$OUTPUT_MARK /p" "$W/traced.raw" >"$W/traced.lines"
	;;
sandbox)
	L1=$(SQUIB_L1_STRACE=1 "$SANDBOX_DIR/build-l1.sh" ./tests/e2e)
	load_kernel
	# one more image part: the aggregator, at /usr/bin/straceagg
	R=$W/agg-root
	rm -rf "$R"
	mkdir -p "$R/usr/bin"
	cp "$W/straceagg" "$R/usr/bin/"
	pack_cpio "$R" >"$W/agg.cpio"
	rm -rf "$R"
	cat "$L1" "$W/agg.cpio" >"$W/initramfs.cpio"
	# In L1: the test binary and all it starts run under strace, whose
	# output goes straight into the aggregator (no trace file: it would be
	# hundreds of MB in L1's RAM); the counts come back on the console.
	cmd="strace ${STRACE_OPTS[*]} -o '|/usr/bin/straceagg -exe /usr/bin/squib -o /tmp/traced.txt' /run-tests.sh $(shell_quote "${GO_TEST_FLAGS[@]}"); rc=\$?"
	cmd="$cmd; i=0; while ! grep -q '^# end\$' /tmp/traced.txt 2>/dev/null && [ \$i -lt 600 ]; do sleep 0.1; i=\$((i+1)); done"
	cmd="$cmd; sed 's/^/$OUTPUT_MARK /' /tmp/traced.txt; exit \$rc"
	log "built in $(_elapsed "$T0") s"
	for attempt in 1 2; do
		rc=0
		boot_l1 "$W/initramfs.cpio" "${SQUIB_SANDBOX_TIMEOUT:-3600}" "$cmd" || rc=$?
		grep -a -q -E '^SQUIB-L1-RESULT rc=[0-9]+$' "$L1_LOG" && break
		[ "$attempt" = 2 ] && break
		log "L1 itself failed (no result line; see $L1_LOG): trying again once"
	done
	grep -a "^$OUTPUT_MARK " "$L1_LOG" >"$W/traced.lines" || true
	;;
esac

if ! grep -q "^$OUTPUT_MARK # end\$" "$W/traced.lines"; then
	die "no complete trace came back (tests: exit status $rc)"
fi
{
	if [ "${SQUIB_SECCOMP_TRACE_APPEND:-0}" = 1 ] && [ -f "$TRACED" ]; then
		cat "$TRACED"
	else
		echo "# squib's syscalls in the e2e suite, counted by tools/seccomp/trace.sh; do not edit."
		echo "# Each section is one traced run. Lines: syscall <name> | ioctl <request>,"
		echo "# then the calls, then the calls made after the process's first KVM_RUN."
	fi
	echo "# run: $(date -u +%Y-%m-%dT%H:%M:%SZ), $MODE mode, kernel $SQUIB_KERNEL_VERSION, tests exit status $rc"
	echo "# flags: ${GO_TEST_FLAGS[*]}"
	sed "s/^$OUTPUT_MARK //" "$W/traced.lines" | grep -v '^# end$'
} >"$TRACED.tmp"
mv "$TRACED.tmp" "$TRACED"
log "wrote $TRACED ($(grep -c '^syscall ' "$TRACED") syscall lines, $(grep -c '^ioctl ' "$TRACED") ioctl lines)"
(cd "$REPO_ROOT" && go run ./tools/seccomp/gendefault) || die "gendefault failed"
log "regenerated internal/seccomp/default.json"
if [ "$rc" != 0 ]; then
	log "FAIL: the tests exited with status $rc: the trace may lack what the failed tests would have done"
fi
exit "$rc"
