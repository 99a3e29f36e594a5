#!/usr/bin/env bash
# Builds kvd and the tools (kvctl, kvdump, kvload, kvbench; Release, into
# build/) when sources changed, then execs kvd with the given flags. With no
# flags: port 8080, data directory ./data. The tools land in build/tools/.
set -euo pipefail
cd "$(dirname "$0")"
. tools/deps.sh
kvd_ensure_deps run
if [ ! -f build/CMakeCache.txt ]; then
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build build -j"$(nproc)" --target kvd kvctl kvdump kvload kvbench >/dev/null
# A burst of 10,000 connections needs a listen backlog the default
# net.core.somaxconn (4096) cuts short: raise it when allowed (root).
if [ "$(id -u)" -eq 0 ] && [ -w /proc/sys/net/core/somaxconn ] &&
	[ "$(cat /proc/sys/net/core/somaxconn)" -lt 65535 ]; then
	echo 65535 >/proc/sys/net/core/somaxconn 2>/dev/null || true
	echo 65535 >/proc/sys/net/ipv4/tcp_max_syn_backlog 2>/dev/null || true
fi
exec build/kvd "$@"
