#!/usr/bin/env bash
# curves.sh: PUT throughput and p99 of kvd and etcd 3.4 side by side, as
# curves against value size, connections and cluster size (issue 10).
#
# For each cluster size in NODES_LIST it measures, at 64 connections, every
# value size in SIZES, and at 100-byte values every connection count in
# CONNS_LIST. Each point starts both clusters fresh
# (../shared/bench/kvd-cluster.sh on ports 24791+, etcd-cluster.sh on
# 2379x/2380x; fresh data bounds disk use and keeps etcd under its 2 GiB
# backend quota with 256 KiB values), then runs wrk -d$DUR against the kvd
# leader and the etcd leader, alternating. Rows go to a CSV under
# bench/results/ (with the 1-minute load average, since the machine may be
# shared); bench/plot-curves.sh turns it into PNGs under docs/img/.
#
# Usage: bench/curves.sh            (full: 3 x 8 points x 2 systems x 10 s)
#   env: NODES_LIST="1 3 5" SIZES="100 1024 16384 262144"
#        CONNS_LIST="1 16 64 256 1024" DUR=10s CSV=bench/results/curves-<date>.csv
#        KVD (server command, default build/kvd) PLOT=1 (run plot-curves.sh after)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../../shared/bench}
[[ -d $SHARED ]] || SHARED=/work/shared/bench
NODES_LIST=${NODES_LIST:-"1 3 5"}
SIZES=${SIZES:-"100 1024 16384 262144"}
CONNS_LIST=${CONNS_LIST:-"1 16 64 256 1024"}
DUR=${DUR:-10s}
PLOT=${PLOT:-1}
export KVD=${KVD:-$ROOT/build/kvd}
export BASE=${BASE:-/tmp/kvd-curves-$$}
CSV=${CSV:-$ROOT/bench/results/curves-$(date -u +%Y%m%dT%H%M%S).csv}
for t in etcd etcdctl wrk curl gnuplot; do
	command -v "$t" >/dev/null || { echo "curves.sh: $t is missing (apt-get install etcd-server etcd-client wrk curl gnuplot-nox)" >&2; exit 1; }
done
ulimit -n 20000 2>/dev/null || true

cleanup() {
	"$SHARED/kvd-cluster.sh" stop >/dev/null 2>&1 || true
	"$SHARED/etcd-cluster.sh" stop >/dev/null 2>&1 || true
	rm -rf "$BASE"
}
trap cleanup EXIT

mkdir -p "$(dirname "$CSV")"
echo "system,nodes,value_bytes,conns,rps,p50_ms,p99_ms,non2xx,errors,load1,utc" >"$CSV"

run() { # system url nodes size conns
	local sys=$1 url=$2 n=$3 size=$4 conns=$5 threads=2 res
	((conns < threads)) && threads=$conns
	res=$(SYSTEM=$sys VALUE_LEN=$size wrk -t"$threads" -c"$conns" -d"$DUR" --timeout 10s \
		-s "$ROOT/bench/curve-put.lua" "$url" 2>&1 | grep '^RESULT' || true)
	if [[ -z $res ]]; then
		echo "$sys,$n,$size,$conns,0,,,,wrk failed,$(cut -d' ' -f1 /proc/loadavg),$(date -u +%FT%TZ)" >>"$CSV"
		return
	fi
	awk -v s="$sys" -v n="$n" -v z="$size" -v c="$conns" -v la="$(cut -d' ' -f1 /proc/loadavg)" \
		-v t="$(date -u +%FT%TZ)" '{
		for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
		printf "%s,%s,%s,%s,%.0f,%.2f,%.2f,%d,%d,%s,%s\n", s, n, z, c, v["rps"], v["p50_us"] / 1000,
			v["p99_us"] / 1000, v["non2xx"], v["connect_err"] + v["read_err"] + v["write_err"] + v["timeout"], la, t
	}' <<<"$res" | tee -a "$CSV"
}

start() { # script nodes: a start can fail ("member died": etcd-cluster.sh looks before etcd's exec); two retries
	local try
	for try in 1 2 3; do
		"$SHARED/$1" start "$2" >/dev/null && return 0
		"$SHARED/$1" stop >/dev/null 2>&1 || true
		echo "curves.sh: $1 start $2 failed (try $try)" >&2
		sleep 1
	done
	return 1
}

point() { # nodes size conns
	local n=$1 size=$2 conns=$3 kl el
	start etcd-cluster.sh "$n"
	start kvd-cluster.sh "$n"
	kl=$("$SHARED/kvd-cluster.sh" leader)
	el=$("$SHARED/etcd-cluster.sh" leader)
	run kvd "$kl" "$n" "$size" "$conns"
	run etcd "$el" "$n" "$size" "$conns"
	"$SHARED/kvd-cluster.sh" stop >/dev/null
	"$SHARED/etcd-cluster.sh" stop >/dev/null
}

for n in $NODES_LIST; do
	for size in $SIZES; do point "$n" "$size" 64; done
	for conns in $CONNS_LIST; do
		[[ $conns == 64 && " $SIZES " == *" 100 "* ]] && continue # measured above
		point "$n" 100 "$conns"
	done
done
echo "curves.sh: data in $CSV"
[[ $PLOT == 1 ]] && "$ROOT/bench/plot-curves.sh" "$CSV"
