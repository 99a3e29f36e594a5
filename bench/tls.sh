#!/usr/bin/env bash
# Benchmark: cost of TLS. PUT and linearizable GET throughput with and without
# mutual TLS, 1 and 3 nodes, in the same run, the two modes alternated (the
# machine is shared: each line carries the 1-minute load average when it
# started). kvbench (64 keep-alive connections, 100-byte values, 10,000 keys)
# against the leader; with TLS it presents a client certificate (--tls-ca:
# mutual TLS, as between the nodes). Certificates are made with openssl.
# Besides req/s (which the machine's load moves a lot), each line gives the
# CPU time all nodes spent per request (utime + stime from /proc, in µs): the
# steadier measure of what TLS costs.
# Usage: bench/tls.sh [ROUNDS] [KVD_BIN] [KVBENCH_BIN]; SECONDS_PER_RUN (5).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
bin=${2:-build/kvd}
kvbench=${3:-build/tools/kvbench}
secs=${SECONDS_PER_RUN:-5}
root=$(mktemp -d /tmp/kvd-bench-tls-XXXXXX)
pids=()
stop_nodes() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}
cleanup() {
	stop_nodes
	rm -rf "$root"
}
trap cleanup EXIT

c=$root/certs
mkdir -p "$c"
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$c/ext"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$c/ca.key" \
	-out "$c/ca.crt" -days 2 -subj /CN=bench-ca 2>/dev/null
for n in node client; do
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$c/$n.key" \
		-out "$c/$n.csr" -subj "/CN=$n" 2>/dev/null
	openssl x509 -req -in "$c/$n.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
		-out "$c/$n.crt" -days 2 -extfile "$c/ext" 2>/dev/null
done
tls_args=(--tls-cert "$c/node.crt" --tls-key "$c/node.key" --tls-ca "$c/ca.crt")
client_tls=(--cacert "$c/ca.crt" --cert "$c/client.crt" --key "$c/client.key")

free_ports() {
	python3 -c 'import socket,sys
s=[socket.socket() for _ in range(int(sys.argv[1]))]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}

starts=0
# start NODES MODE: starts a cluster, sets $leader_port
start() {
	local nodes=$1 mode=$2 peers="" i
	starts=$((starts + 1)) # a fresh data directory every time
	read -r -a ports <<<"$(free_ports "$nodes")"
	for i in "${ports[@]}"; do peers+="${peers:+,}127.0.0.1:$i"; done
	for i in "${!ports[@]}"; do
		local args=(--port "${ports[$i]}" --working-dir "$root/s$starts-$mode-$nodes-$i" --log-level warn)
		[ "$nodes" -gt 1 ] && args+=(--peers "$peers")
		[ "$mode" = tls ] && args+=("${tls_args[@]}")
		"$bin" "${args[@]}" 2>"$root/s$starts-$mode-$nodes-$i.log" &
		pids+=($!)
	done
	local scheme=http curl_tls=()
	[ "$mode" = tls ] && scheme=https curl_tls=(--cacert "$c/ca.crt" --cert "$c/client.crt" --key "$c/client.key")
	leader_port=""
	for _ in $(seq 1 300); do
		leader_port=$(curl -s "${curl_tls[@]}" "$scheme://127.0.0.1:${ports[0]}/cluster/info" |
			python3 -c 'import json,sys; l=json.load(sys.stdin)["leader"]; print(l.rsplit(":",1)[1] if l else "")' 2>/dev/null || true)
		[ -n "$leader_port" ] && break
		sleep 0.1
	done
	[ -n "$leader_port" ] || {
		echo "no leader ($mode, $nodes nodes)"
		tail -n 5 "$root/s$starts-$mode-$nodes-"*.log
		exit 1
	}
}

# CPU ticks (utime + stime) of every node process
cpu_ticks() {
	local t=0 p
	for p in "${pids[@]}"; do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$t"
}
hz=$(getconf CLK_TCK)

printf '%-5s %-6s %-4s %-6s %10s %9s %9s %10s %6s\n' round nodes op mode 'req/s' 'p50 ms' 'p99 ms' 'cpu us/req' load1
for r in $(seq 1 "$rounds"); do
	for nodes in 1 3; do
		# alternate which mode goes first from round to round
		modes=(plain tls)
		[ $((r % 2)) = 0 ] && modes=(tls plain)
		for mode in "${modes[@]}"; do
			start "$nodes" "$mode"
			scheme=http extra=()
			[ "$mode" = tls ] && scheme=https extra=("${client_tls[@]}")
			for op in put get; do
				load=$(cut -d' ' -f1 /proc/loadavg)
				t0=$(cpu_ticks)
				out=$("$kvbench" --url "$scheme://127.0.0.1:$leader_port" --op "$op" --connections 64 \
					--duration "${secs}s" --keys 10000 --value-bytes 100 "${extra[@]}")
				rps=$(sed -n 's/^requests\/s: //p' <<<"$out")
				p50=$(sed -n 's/^latency ms: p50 \([0-9.]*\).*/\1/p' <<<"$out")
				p99=$(sed -n 's/.* p99 \([0-9.]*\) .*/\1/p' <<<"$out")
				bad=$(sed -n 's/^transport errors: //p' <<<"$out")
				n=$(sed -n 's/^requests: \([0-9]*\) .*/\1/p' <<<"$out")
				cpu=$(python3 -c "print('%.1f' % (($(cpu_ticks) - $t0) * 1e6 / $hz / max($n, 1)))")
				printf '%-5s %-6s %-4s %-6s %10s %9s %9s %10s %6s%s\n' "$r" "$nodes" "$op" "$mode" "$rps" "$p50" "$p99" "$cpu" "$load" \
					"$([ "$bad" != 0 ] && echo " transport errors: $bad")"
			done
			stop_nodes
		done
	done
done
