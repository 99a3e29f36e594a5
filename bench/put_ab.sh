#!/usr/bin/env bash
# Benchmark: PUT throughput of two kvd binaries in the same run, single node,
# rounds alternating A, B, A, B... (the machine is shared: alternating spreads
# the other load over both). Each round starts a fresh node on an empty data
# directory and runs kvbench --op put, 64 connections, 100-byte values over
# 10,000 keys for SECONDS (default 10). Prints requests/s and latency per
# round and the load average.
# Used for the cost of revisions: A = the tree before them (7fdd182, the
# first parent of the merge of branch 'rev'), built from `git archive` in
# /tmp; B = this tree.
# Usage: bench/put_ab.sh A_KVD B_KVD [ROUNDS] [KVBENCH]
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1
b=$2
rounds=${3:-4}
kvbench=${4:-build/tools/kvbench}
secs=${SECONDS_PER_RUN:-10}
root=$(mktemp -d /tmp/kvd-putab-XXXXXX)
pid=""
cleanup() {
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
	rm -rf "$root"
}
trap cleanup EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
for r in $(seq 1 "$rounds"); do
	for which in A B; do
		bin=$a
		[ "$which" = B ] && bin=$b
		rm -rf "$root/d"
		"$bin" --port "$port" --working-dir "$root/d" --log-level warn 2>"$root/log" &
		pid=$!
		for _ in $(seq 1 100); do
			curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
			sleep 0.1
		done
		out=$("$kvbench" --url "http://127.0.0.1:$port" --op put --connections 64 \
			--duration "${secs}s" --keys 10000 --value-bytes 100)
		echo "round $r $which: $(echo "$out" | grep 'requests/s') $(echo "$out" | grep 'latency')"
		kill "$pid"
		wait "$pid" 2>/dev/null || true
		pid=""
	done
done
echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
