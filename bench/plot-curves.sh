#!/usr/bin/env bash
# plot-curves.sh CSV [OUTDIR]: PNGs from the CSV of bench/curves.sh, kvd and
# etcd side by side, throughput (top) and p99 (bottom) in each:
#   put-vs-size.png   x: value size (64 connections), one line per system and cluster size
#   put-vs-conns.png  x: connections (100-byte values), same lines
#   put-vs-nodes.png  x: cluster size (100-byte values, 64 connections)
# OUTDIR defaults to docs/img. Needs gnuplot (Debian: gnuplot-nox).
set -euo pipefail
cd "$(dirname "$0")/.."
CSV=${1:?usage: bench/plot-curves.sh CSV [OUTDIR]}
OUT=${2:-docs/img}
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# one data file per (system, nodes) and sweep: x rps p99
awk -F, -v d="$TMP" 'NR > 1 && $5 > 0 {
	if ($4 == 64) print $3, $5, $7 > (d "/size-" $1 "-" $2 ".dat")
	if ($3 == 100) print $4, $5, $7 > (d "/conns-" $1 "-" $2 ".dat")
	if ($3 == 100 && $4 == 64) print $2, $5, $7 > (d "/nodes-" $1 ".dat")
}' "$CSV"
for f in "$TMP"/*.dat; do sort -n -o "$f" "$f"; done

plot() { # name xlabel logx prefix title
	local name=$1 xlabel=$2 logx=$3 prefix=$4 title=$5 rps="" p99="" f label
	for f in "$TMP/$prefix"*.dat; do
		[[ -f $f ]] || continue
		label=$(basename "$f" .dat); label=${label#"$prefix"}
		[[ $prefix == nodes- ]] || label="${label%-*} ${label##*-} node(s)"
		rps+="${rps:+, }'$f' using 1:2 with linespoints title '$label'"
		p99+="${p99:+, }'$f' using 1:3 with linespoints title '$label'"
	done
	[[ -n $rps ]] || return 0
	gnuplot <<GP
set terminal pngcairo size 900,800 noenhanced
set output '$OUT/$name.png'
set multiplot layout 2,1 title '$title'
set grid
set key outside right
$( [[ $logx == 1 ]] && echo "set logscale x 2" )
set xlabel '$xlabel'
set ylabel 'PUT requests/s'
$( [[ $logx == 1 ]] && echo "set logscale y 10" )
plot $rps
set ylabel 'p99 latency (ms)'
set logscale y
plot $p99
unset multiplot
GP
	echo "$OUT/$name.png"
}
plot put-vs-size "value size (bytes)" 1 size- "PUT against value size, 64 connections ($(basename "$CSV"))"
plot put-vs-conns "connections" 1 conns- "PUT against connections, 100-byte values ($(basename "$CSV"))"
plot put-vs-nodes "cluster size (nodes)" 0 nodes- "PUT against cluster size, 100-byte values, 64 connections ($(basename "$CSV"))"
