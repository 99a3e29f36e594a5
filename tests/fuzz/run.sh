#!/usr/bin/env bash
# Runs every libFuzzer target of a KVD_FUZZ build for a fixed time budget on
# a scratch copy of its seed corpus (tests/fuzz/corpus/<target>/, never
# modified), and fails on any crash, leak, timeout or sanitizer report.
#
#   tests/fuzz/run.sh [BUILD_DIR [TARGET...]]     (BUILD_DIR default build-fuzz)
#
# Environment: KVD_FUZZ_SECONDS per target (default 20; 120 with KVD_SOAK=1).
# Per target it prints executions/s, final corpus size and edge coverage
# (libFuzzer's "cov:"), then one line "FUZZ <target> PASS|FAIL" that test.sh
# counts. A failing input is kept as BUILD_DIR/fuzz/artifacts/<target>-*;
# reproduce with BUILD_DIR/fuzz/<target> <that file>. Exit status: 0 when
# every target passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build-fuzz}
shift || true
if [ -n "${KVD_FUZZ_SECONDS:-}" ]; then
	secs=$KVD_FUZZ_SECONDS
elif [ "${KVD_SOAK:-0}" = 1 ]; then
	secs=120
else
	secs=20
fi
if [ $# -gt 0 ]; then
	targets=("$@")
else
	targets=()
	for b in "$build"/fuzz/fuzz_*; do
		[ -x "$b" ] && targets+=("$(basename "$b")")
	done
fi
if [ ${#targets[@]} -eq 0 ]; then
	echo "run.sh: no fuzz targets in $build/fuzz (build with CC=clang -DKVD_FUZZ=ON)" >&2
	exit 2
fi

artifacts="$build/fuzz/artifacts"
mkdir -p "$artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-fuzz-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=0

for t in "${targets[@]}"; do
	bin="$build/fuzz/$t"
	corpus="$work/$t"
	log="$work/$t.log"
	mkdir -p "$corpus"
	if [ -d "$here/corpus/$t" ]; then
		cp "$here/corpus/$t"/* "$corpus"/ 2>/dev/null || true
	fi
	seeds=$(find "$corpus" -type f | wc -l)
	# -timeout: one input may take at most 20 s (a hang is a failure);
	# -rss_limit_mb: a leak or an unbounded allocation fails the run.
	ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		"$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 \
		-artifact_prefix="$artifacts/$t-" "$corpus" >"$log" 2>&1
	rc=$?
	execs=$(grep -oE "stat::number_of_executed_units: [0-9]+" "$log" | awk '{print $2}' | tail -1)
	rate=$(grep -oE "stat::average_exec_per_sec: +[0-9]+" "$log" | awk '{print $2}' | tail -1)
	cov=$(grep -oE "cov: [0-9]+" "$log" | tail -1 | awk '{print $2}')
	ft=$(grep -oE "ft: [0-9]+" "$log" | tail -1 | awk '{print $2}')
	files=$(find "$corpus" -type f | wc -l)
	bytes=$(du -sb "$corpus" | awk '{print $1}')
	bad=$(grep -cE "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|ERROR: libFuzzer|deadly signal|==[0-9]+== *ERROR|SUMMARY: |property violated|contract violated" "$log")
	printf "%-22s %ss  execs=%s  exec/s=%s  corpus=%s->%s files (%s bytes)  cov=%s ft=%s\n" \
		"$t" "$secs" "${execs:-?}" "${rate:-?}" "$seeds" "$files" "$bytes" "${cov:-?}" "${ft:-?}"
	if [ "$rc" != 0 ] || [ "$bad" != 0 ] || [ -z "$execs" ]; then
		failed=$((failed + 1))
		echo "---- $t failed (exit $rc); log tail:"
		grep -E "ERROR|runtime error|violated|SUMMARY|Test unit written|^    #[0-9]" "$log" | head -40
		tail -5 "$log"
		echo "FUZZ $t FAIL"
	else
		echo "FUZZ $t PASS"
	fi
done
[ "$failed" = 0 ]
