#!/usr/bin/env bash
# l0watch.sh: is a PUT latency spike a LevelDB write stall? (issue 10)
#
# LevelDB sleeps 1 ms in every write once level 0 holds 8 tables and stops
# writes at 12 until a compaction finishes; a stop would hold the applier,
# and so every PUT, for as long as that compaction takes. LevelDB logs the
# stop ("Too many L0 files; waiting...", also "Current memtable full;
# waiting...") in its LOG file but not the 1 ms slowdown, so this script
# replays the LOG: +1 level-0 table at each "Level-0 table #N: ... OK", -n
# at each "Compacted n@0", and reports the largest count reached per node,
# next to wrk's p99 and max for each run. Runs RUNS x DUR of the compare.sh
# PUT load (wrk -t2 -c64, 100-byte values, 10,000 keys) on one fresh N-node
# cluster (../shared/bench/kvd-cluster.sh, ports 24791+).
#
# Usage: bench/l0watch.sh [KVD_BIN]    env: NODES=3 RUNS=3 DUR=10s
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-$PWD/../../shared/bench}
[[ -d $SHARED ]] || SHARED=/work/shared/bench
NODES=${NODES:-3}; RUNS=${RUNS:-3}; DUR=${DUR:-10s}
export BASE=${BASE:-/tmp/kvd-l0watch-$$}
BIN=$(realpath "${1:-build/kvd}")
cleanup() { "$SHARED/kvd-cluster.sh" stop >/dev/null 2>&1 || true; rm -rf "$BASE"; }
trap cleanup EXIT

max_l0() { # largest level-0 table count in one LevelDB LOG
	awk '/Level-0 table #[0-9]+: [0-9]+ bytes OK/ {l0++; if (l0 > m) m = l0}
	     /Compacted [0-9]+@0/ {match($0, /Compacted [0-9]+@0/); l0 -= substr($0, RSTART + 10, RLENGTH - 12) + 0}
	     END {print m + 0}' "$1"
}

KVD=$BIN "$SHARED/kvd-cluster.sh" start "$NODES" >/dev/null
leader=$("$SHARED/kvd-cluster.sh" leader)
python3 "$SHARED/kvd-preload.py" "$leader" >/dev/null 2>&1 || true
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "run\treq/s\tp99_ms\tmax_ms\tmax_L0_per_node\twaiting_lines\n"
for run in $(seq 1 "$RUNS"); do
	res=$(wrk -t2 -c64 -d"$DUR" -s "$SHARED/wrk/kvd-put.lua" "$leader" 2>&1 | grep '^RESULT')
	l0=""; waits=0
	for port in $(cat "$BASE/ports"); do
		l0+="${l0:+/}$(max_l0 "$BASE/k$port/kv/LOG")"
		waits=$((waits + $(grep -c 'waiting' "$BASE/k$port/kv/LOG" || true)))
	done
	awk -v r="$run" -v l0="$l0" -v w="$waits" '{for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}}
		END {printf "%s\t%.0f\t%.1f\t%.1f\t%s\t%d\n", r, v["rps"], v["p99_us"] / 1000, v["max_us"] / 1000, l0, w}' <<<"$res"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
