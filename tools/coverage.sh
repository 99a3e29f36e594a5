#!/usr/bin/env bash
# Line coverage (gcov) of raft/ and the node driver under the simulation's
# CI seeds, and optionally under the unit tests.
#
#   tools/coverage.sh [SEEDS] [STEPS]    # default 10000 seeds x 5000 steps
#   KVD_COV_UNIT=1 tools/coverage.sh     # also run every unit test (ctest -L unit)
#
# Builds build-cov (Debug, --coverage), runs the sim, then prints the lines
# executed / executable per source file and per folder. Only counts files
# compiled into the programs that ran: a driver file the sim does not link
# shows as not run. Last, the driver's files the simulation runs
# (SIM_DRIVER_FILES: the writer's, the transport's, the update dispatch's and
# the waiting writes' rules) on their own.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-10000}
steps=${2:-5000}
dir=build-cov

cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS="--coverage -O0" \
	-DCMAKE_EXE_LINKER_FLAGS="--coverage" >/dev/null
cmake --build "$dir" -j"$(nproc)" >/dev/null
find "$dir" -name '*.gcda' -delete
echo "sim: $seeds seeds x $steps steps" >&2
"$dir/tests/sim/sim" --seeds "$seeds" --steps "$steps" >/dev/null
if [ "${KVD_COV_UNIT:-0}" = 1 ]; then
	ctest --test-dir "$dir" -L unit -j"$(nproc)" >/dev/null || true
fi

# One gcov pass per object directory; gcov -n prints "File '...'" followed by
# "Lines executed:P% of N" for every source it has data for.
SIM_DRIVER_FILES="api/write_rules.c api/transport_rules.c api/drive_rules.c api/wait_rules.c"
report=$(mktemp)
find "$dir" -name '*.gcda' -printf '%h\n' | sort -u | while read -r d; do
	(cd "$d" && gcov -n ./*.gcda 2>/dev/null)
done >"$report"
awk -v root="$PWD/" '
	/^File / { f = $2; gsub(/\047/, "", f); sub(root, "", f); next }
	/^Lines executed:/ && f != "" {
		split($2, a, ":"); pct = a[2]; sub(/%/, "", pct); n = $4
		if (f ~ /^(raft|api|engine)\/.*\.c$/ && !(f in seen)) {
			seen[f] = 1; hit = int(pct * n / 100 + 0.5)
			printf "%-28s %6d / %-6d %5.1f%%\n", f, hit, n, pct
			split(f, p, "/"); dh[p[1]] += hit; dn[p[1]] += n
		}
		f = ""
	}
	END { for (d in dn) printf "%-28s %6d / %-6d %5.1f%%\n", d "/ (total)", dh[d], dn[d], 100 * dh[d] / dn[d] }
' "$report" | sort >"$report.table"
cat "$report.table"
echo "driver files run by the simulation:"
for f in $SIM_DRIVER_FILES; do
	grep "^$f " "$report.table" || printf '%-28s not run\n' "$f"
done
rm -f "$report" "$report.table"
