#!/usr/bin/env bash
# profile.sh: CPU cost per replicated write, and where it goes, for one or
# more kvd builds measured alternately in the same run.
#
# Why CPU per write and not requests/s: the 2-core machine is shared, so
# throughput moves with whatever else runs; the CPU time each kvd process
# spends per acknowledged PUT moves much less. For each build and round it
# starts an N-node cluster (../shared/bench/kvd-cluster.sh, ports 24791+),
# runs wrk -t2 -c$CONNS -d$DUR with 100-byte values (the compare.sh PUT load),
# reads utime+stime of every kvd process from /proc/<pid>/stat before and
# after, and prints microseconds of CPU per write per node and in total, with
# the context switches per write (voluntary + involuntary, summed over the
# node's threads from /proc/<pid>/task/*/status: each thread hand-off that
# sleeps is one) and the mean log fdatasync latency and syncs per 1,000
# writes (from /metrics kvd_fsync_duration_seconds), and the bytes the node
# sent to the disk per write (/proc/<pid>/io write_bytes: log, zeros
# preallocated ahead of it, LevelDB, snapshots).
# With PERF=1 (default) the last round of each build also runs
# `perf record -g` on the leader and on one follower and prints the top 10
# symbols by self and by children time for each.
#
# Usage: bench/profile.sh [KVD_BIN ...]     (default: build/kvd)
#   env: NODES=3 CONNS=64 DUR=10s ROUNDS=1 PERF=1 OUT=/tmp/kvd-profile-<date>
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../../shared/bench}
[[ -d $SHARED ]] || SHARED=/work/shared/bench
NODES=${NODES:-3}; CONNS=${CONNS:-64}; DUR=${DUR:-10s}; ROUNDS=${ROUNDS:-1}; PERF=${PERF:-1}
OUT=${OUT:-/tmp/kvd-profile-$(date -u +%Y%m%dT%H%M%S)} # perf data is large: not in the tree
BINS=("$@"); ((${#BINS[@]})) || BINS=("$ROOT/build/kvd")
export BASE=${BASE:-/tmp/kvd-profile-$$}
mkdir -p "$OUT"
HZ=$(getconf CLK_TCK)

cleanup() { "$SHARED/kvd-cluster.sh" stop >/dev/null 2>&1 || true; rm -rf "$BASE"; }
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in clock ticks
wbytes() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }
fsyncs() { # "<sum seconds> <count>" of the node's log fdatasyncs
	curl -s --max-time 2 "http://127.0.0.1:$1/metrics" |
		awk '/^kvd_fsync_duration_seconds_sum/ {s = $2} /^kvd_fsync_duration_seconds_count/ {c = $2} END {print s + 0, c + 0}'
}

pid_of_port() { # the kvd pid listening on 127.0.0.1:port (from the cluster's pid file)
	local port=$1 p
	for p in $(cat "$BASE/pids"); do
		if tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- "--port=$port "; then echo "$p"; return; fi
	done
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "build\tround\tnode\trole\tcpu_s\twrites\tus_per_write\tcsw_per_write\tfsync_us\tsyncs_per_1k\tdisk_bytes_per_write\n" | tee "$OUT/cpu.tsv"
for round in $(seq 1 "$ROUNDS"); do
	for bin in "${BINS[@]}"; do
		bin=$(realpath "$bin"); tag=$(basename "$bin")
		KVD=$bin "$SHARED/kvd-cluster.sh" start "$NODES" >/dev/null
		leader=$("$SHARED/kvd-cluster.sh" leader)
		python3 "$SHARED/kvd-preload.py" "$leader" >/dev/null 2>&1 || true
		lport=${leader##*:}
		declare -A before=() role=() csw0=() fs0=() wb0=()
		for port in $(cat "$BASE/ports"); do
			p=$(pid_of_port "$port"); before[$port]=$(ticks "$p")
			csw0[$port]=$(ctxsw "$p"); fs0[$port]=$(fsyncs "$port"); wb0[$port]=$(wbytes "$p")
			if [[ $port == "$lport" ]]; then role[$port]=leader; else role[$port]=follower; fi
		done
		fport=""; for port in $(cat "$BASE/ports"); do [[ $port != "$lport" ]] && { fport=$port; break; }; done
		perfpids=()
		if [[ $PERF == 1 && $round == "$ROUNDS" ]]; then
			perf record -g -q -o "$OUT/$tag-leader.data" -p "$(pid_of_port "$lport")" >/dev/null 2>&1 &
			perfpids+=($!)
			if [[ -n $fport ]]; then
				perf record -g -q -o "$OUT/$tag-follower.data" -p "$(pid_of_port "$fport")" >/dev/null 2>&1 &
				perfpids+=($!)
			fi
			sleep 0.5
		fi
		res=$(wrk -t2 -c"$CONNS" -d"$DUR" -s "$SHARED/wrk/kvd-put.lua" "$leader" 2>&1 | grep '^RESULT')
		for pp in "${perfpids[@]}"; do kill -INT "$pp" 2>/dev/null || true; done
		for pp in "${perfpids[@]}"; do wait "$pp" 2>/dev/null || true; done
		writes=$(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$res")
		non2xx=$(sed -E 's/.* non2xx=([0-9]+).*/\1/' <<<"$res")
		writes=$((writes - non2xx))
		total=0
		for port in $(cat "$BASE/ports"); do
			p=$(pid_of_port "$port"); d=$(($(ticks "$p") - before[$port])); total=$((total + d))
			c=$(($(ctxsw "$p") - csw0[$port])); f1=$(fsyncs "$port"); wb=$(($(wbytes "$p") - wb0[$port]))
			awk -v b="$tag" -v r="$round" -v n="$port" -v ro="${role[$port]}" -v d="$d" -v hz="$HZ" -v w="$writes" \
				-v c="$c" -v f0="${fs0[$port]}" -v f1="$f1" -v wb="$wb" \
				'BEGIN{split(f0, a, " "); split(f1, z, " "); ds = z[1] - a[1]; dc = z[2] - a[2]
				printf "%s\t%s\t%s\t%s\t%.2f\t%d\t%.1f\t%.2f\t%.0f\t%.1f\t%.0f\n", b, r, n, ro, d/hz, w, d/hz*1e6/w,
					c/w, (dc > 0 ? ds*1e6/dc : 0), dc*1000/w, wb/w}' | tee -a "$OUT/cpu.tsv"
		done
		awk -v b="$tag" -v r="$round" -v d="$total" -v hz="$HZ" -v w="$writes" \
			'BEGIN{printf "%s\t%s\tall\t-\t%.2f\t%d\t%.1f\n", b, r, d/hz, w, d/hz*1e6/w}' | tee -a "$OUT/cpu.tsv"
		echo "# $tag round $round: $res" >>"$OUT/wrk.txt"
		"$SHARED/kvd-cluster.sh" stop >/dev/null
		unset before role csw0 fs0 wb0
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ $PERF == 1 ]]; then
	for f in "$OUT"/*.data; do
		[[ -f $f ]] || continue
		for mode in no-children children; do
			echo "== $(basename "$f" .data): top 10, sorted by ${mode/no-children/self}"
			perf report -i "$f" --$mode --stdio --no-demangle -g none --percent-limit 0.5 \
				--sort dso,sym 2>/dev/null | grep -E "^ +[0-9]" | sed -E "s/ +$//" | head -10 || true
		done
	done | tee "$OUT/top10.txt"
fi
echo "results in $OUT"
