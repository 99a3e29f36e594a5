#!/usr/bin/env bash
# Installs what is missing, builds kvd twice (Release; Debug with ASan+UBSan,
# warnings as errors in both) and runs every test: Check unit tests and the
# deterministic simulation through ctest, then the integration tests that
# start real kvd processes. Ends with one line "N passed, N failed".
#
# Last, the libFuzzer targets of tests/fuzz (clang build in build-fuzz), each
# for KVD_FUZZ_SECONDS (20; 120 with KVD_SOAK=1), each one pass or fail.
#
# Environment: KVD_TEST_FILTER=pattern runs only matching integration tests;
# KVD_SOAK=1 adds the long opt-in runs (simulation seeds, soak tests).
set -uo pipefail
cd "$(dirname "$0")"
. tools/deps.sh
kvd_ensure_deps test || exit 1

passed=0
failed=0
skipped=0
jobs=$(nproc)

build() {
	local dir=$1
	shift
	cmake -S . -B "$dir" -DKVD_WERROR=ON "$@" >/dev/null &&
		cmake --build "$dir" -j"$jobs" 2>&1 | grep -E "error|warning|Error" || true
	[ "${PIPESTATUS[0]}" = 0 ] || return 1
	cmake --build "$dir" -j"$jobs" >/dev/null 2>&1
}

count_ctest() {
	local log=$1
	local line total fails
	line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -1)
	if [ -z "$line" ]; then
		failed=$((failed + 1))
		return
	fi
	fails=$(echo "$line" | sed -E 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\1/')
	total=$(echo "$line" | sed -E 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\2/')
	skips=$(grep -c "(Skipped)" "$log" || true)
	passed=$((passed + total - fails - skips))
	failed=$((failed + fails))
	skipped=$((skipped + skips))
}

echo "== build (Release)"
if ! build build -DCMAKE_BUILD_TYPE=Release; then
	echo "build failed"
	echo "0 passed, 1 failed"
	exit 1
fi
echo "== build (Debug, ASan+UBSan)"
if ! build build-asan -DCMAKE_BUILD_TYPE=Debug -DKVD_SANITIZE=ON; then
	echo "sanitizer build failed"
	echo "0 passed, 1 failed"
	exit 1
fi

if command -v clang-format >/dev/null && [ -f .clang-format ]; then
	echo "== clang-format"
	bad=$(git ls-files '*.c' '*.h' 2>/dev/null | xargs -r clang-format --dry-run -Werror 2>&1 | grep -c "error:" || true)
	if [ "$bad" != "0" ]; then
		echo "clang-format: $bad formatting differences (run clang-format -i)"
		failed=$((failed + 1))
	else
		passed=$((passed + 1))
	fi
fi

echo "== unit and simulation tests (Release)"
ctest --test-dir build --output-on-failure -j"$jobs" 2>&1 | tee build/ctest.log | grep -E "tests passed|Failed|\*\*\*" || true
count_ctest build/ctest.log

# The planted-bug runs are a property of the simulator and the seeds, not of
# memory safety: they run once, in the Release stage (sim_plants alone walks
# 30,000 seeds for unreachable_restart, minutes under the sanitizers).
echo "== unit and simulation tests (ASan+UBSan)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	KVD_SIM_QUICK=1 ctest --test-dir build-asan --output-on-failure -j"$jobs" -E "^sim_plant" 2>&1 |
	tee build-asan/ctest.log | grep -E "tests passed|Failed|\*\*\*" || true
count_ctest build-asan/ctest.log

# Runs python unittest with the given arguments and log; adds its counts.
count_unittest() {
	local log=$1
	local ran ifail iskip
	ran=$(grep -E "^Ran [0-9]+ test" "$log" | sed -E 's/Ran ([0-9]+).*/\1/')
	ran=${ran:-0}
	ifail=$(grep -E "^FAILED \(" "$log" | grep -oE "(failures|errors)=[0-9]+" | cut -d= -f2 | awk '{s+=$1} END {print s+0}')
	iskip=$(grep -E "^(OK|FAILED) \(" "$log" | grep -oE "skipped=[0-9]+" | cut -d= -f2)
	iskip=${iskip:-0}
	if [ "$ran" = 0 ] && ! grep -qE "^OK" "$log"; then
		ifail=$((ifail + 1))
	fi
	passed=$((passed + ran - ifail - iskip))
	failed=$((failed + ifail))
	skipped=$((skipped + iskip))
	[ "$ifail" = 0 ] || show_failures "$log"
}

# Prints each failed test's name and the end of its traceback, so that a CI
# log that keeps only part of the output still says what failed and why.
show_failures() {
	awk '/^(FAIL|ERROR): /{name=$0; n=0; grab=1; print; next}
		grab && /^(=+|Ran [0-9]+ test)/{grab=0}
		grab && n < 40 {print "   " $0; n++}' "$1"
}

# The console's browser test drives chromium with puppeteer-core (npm
# registry; the lock file pins it). Without it test_console's browser case
# would only skip, so a failed install counts as a failure.
if [ ! -d tests/browser/node_modules/puppeteer-core ]; then
	if ! (cd tests/browser && { npm ci --no-audit --no-fund >npm.log 2>&1 ||
		npm ci --no-audit --no-fund >npm.log 2>&1; }); then
		echo "npm ci in tests/browser failed (see tests/browser/npm.log): the browser test will skip"
		failed=$((failed + 1))
	fi
fi

echo "== integration tests (real kvd processes, Release)"
export KVD_BIN="$PWD/build/kvd"
python3 -m unittest discover -s tests/integration -p 'test_*.py' -v ${KVD_TEST_FILTER:+-k "$KVD_TEST_FILTER"} 2>&1 | tee build/integration.log | grep -E "^(Ran |OK|FAILED)|\.\.\. (FAIL|ERROR)" || true
count_unittest build/integration.log

echo "== single-node integration tests (ASan+UBSan kvd)"
# Under ASan: the single-node files, and test_tls's single-node classes (its
# TLS-cluster variants repeat multi-node tests); not the client tools' and
# packaging files (kvctl, the console's browser run, install), whose server
# side the others cover. Keeps the whole suite within CI's 20 minutes.
modules="$(cd tests/integration && ls test_*.py |
	grep -vE "cluster|netns|linearizable|kvctl|console|install|test_tls" | sed 's/\.py$//')
	test_tls.TestRefusals test_tls.TestClientToken test_tls.TestTLSHostile
	test_tls.TestTLSHandshakeFlood test_tls.TestReloadAndSessions"
# ASan keeps up to 256 MB of freed memory in quarantine by default; the
# memory-bound tests (API.md §7: 512 MB under hostile clients) measured 494 MB
# of 512 with it. 32 MB keeps use-after-free detection and the bound meaningful.
(cd tests/integration && KVD_BIN="$OLDPWD/build-asan/kvd" ASAN_OPTIONS=detect_leaks=0:quarantine_size_mb=32 \
	python3 -m unittest $modules -v ${KVD_TEST_FILTER:+-k "$KVD_TEST_FILTER"}) 2>&1 | tee build-asan/integration.log | grep -E "^(Ran |OK|FAILED)|\.\.\. (FAIL|ERROR)" || true
count_unittest build-asan/integration.log

echo "== fuzzing (clang, libFuzzer + ASan + UBSan, ${KVD_FUZZ_SECONDS:-$([ "${KVD_SOAK:-0}" = 1 ] && echo 120 || echo 20)} s per target)"
mkdir -p build-fuzz
if ! command -v clang >/dev/null; then
	echo "clang not found: fuzz targets not built"
	failed=$((failed + 1))
elif ! CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DKVD_FUZZ=ON -DKVD_WERROR=ON \
	>build-fuzz/configure.log 2>&1 ||
	! cmake --build build-fuzz -j"$jobs" --target fuzz >build-fuzz/build.log 2>&1; then
	grep -E "error|Error" build-fuzz/configure.log build-fuzz/build.log | head -20
	echo "fuzz build failed"
	failed=$((failed + 1))
else
	tests/fuzz/run.sh build-fuzz 2>&1 | tee build-fuzz/fuzz.log | grep -vE "^FUZZ " || true
	fpass=$(grep -cE "^FUZZ .* PASS$" build-fuzz/fuzz.log)
	ffail=$(grep -cE "^FUZZ .* FAIL$" build-fuzz/fuzz.log)
	[ "$fpass" = 0 ] && [ "$ffail" = 0 ] && ffail=1
	passed=$((passed + fpass))
	failed=$((failed + ffail))
fi

echo "${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$failed" = 0 ]
