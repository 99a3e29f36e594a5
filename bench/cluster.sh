#!/usr/bin/env bash
# Benchmark: an N-node cluster on loopback (all nodes and wrk share this
# machine), wrk with 64 keep-alive connections and 2 threads, 100-byte values
# over 10,000 keys: PUT and linearizable GET on the leader, stale GET on a
# follower. Usage: bench/cluster.sh [NODES] [KVD_BIN]   (NODES: 1, 3 or 5)
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:-3}
bin=${2:-build/api/kvd}
secs=${SECONDS_PER_RUN:-10}
base=${PORT:-18600}
root=$(mktemp -d /tmp/kvd-bench-XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$root"
}
trap cleanup EXIT

peers=""
for i in $(seq 1 "$nodes"); do peers+="${peers:+,}:$((base + i))"; done
for i in $(seq 1 "$nodes"); do
	args=(--port $((base + i)) --working-dir "$root/n$i" --log-level warn)
	[ "$nodes" -gt 1 ] && args+=(--peers "$peers")
	"$bin" "${args[@]}" 2>"$root/n$i.log" &
	pids+=($!)
done
leader=""
for _ in $(seq 1 100); do
	leader=$(curl -s "http://127.0.0.1:$((base + 1))/cluster/info" |
		python3 -c 'import json,sys; l=json.load(sys.stdin)["leader"]; print(l.rsplit(":",1)[1] if l else "")' 2>/dev/null || true)
	[ -n "$leader" ] && break
	sleep 0.1
done
[ -n "$leader" ] || { echo "no leader"; exit 1; }
follower=$((base + 1))
[ "$follower" = "$leader" ] && follower=$((base + 2))
[ "$nodes" = 1 ] && follower=$leader

run() {
	echo "== $1"
	shift
	wrk -t2 -c64 -d"${secs}s" --latency "$@" | grep -E "Requests/sec|Latency  |50%|99%|Non-2xx|Socket errors"
}
run "$nodes-node PUT (leader :$leader)" -s bench/put.lua "http://127.0.0.1:$leader"
run "$nodes-node GET linearizable (leader :$leader)" -s bench/get.lua "http://127.0.0.1:$leader"
STALE=1 run "$nodes-node GET stale (follower :$follower)" -s bench/get.lua "http://127.0.0.1:$follower"
