#!/usr/bin/env bash
# Benchmark: load 1,000,000 keys (100-byte values) into a single node, SIGKILL
# it, restart it and measure the time until GET /health answers 200 and the
# resident memory. Usage: bench/restart-1m.sh [KVD_BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/api/kvd}
port=${PORT:-18500}
dir=$(mktemp -d /tmp/kvd-bench-XXXXXX)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$dir"' EXIT

"$bin" --port "$port" --working-dir "$dir" --log-level warn &
pid=$!
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.05; done
echo "loading 1,000,000 keys..."
KEYS=1000000 THREADS=2 wrk -t2 -c64 -d${LOAD_SECONDS:-40}s -s bench/seq_put.lua "http://127.0.0.1:$port" | grep -E "Requests/sec|requests in"
for k in 0 499999 999999; do
	printf 'key-%s -> %s bytes\n' $k "$(curl -s "http://127.0.0.1:$port/kv/key-$k" | wc -c)"
done
echo "RSS after load: $(grep VmRSS /proc/$pid/status)"
kill -9 $pid
wait $pid 2>/dev/null || true
start=$(date +%s.%N)
"$bin" --port "$port" --working-dir "$dir" --log-level warn &
pid=$!
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.01; done
end=$(date +%s.%N)
awk -v a="$start" -v b="$end" 'BEGIN { printf "restart to /health 200: %.3f s\n", b - a }'
echo "RSS after restart: $(grep VmRSS /proc/$pid/status)"
echo "data dir: $(du -sh "$dir" | cut -f1)"
