#!/usr/bin/env bash
# Builds kvd (Release, into build/) when sources changed, then execs it with
# the given flags. With no flags: port 8080, data directory ./data.
set -euo pipefail
cd "$(dirname "$0")"
. tools/deps.sh
kvd_ensure_deps run
if [ ! -f build/CMakeCache.txt ]; then
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build build -j"$(nproc)" --target kvd >/dev/null
exec build/kvd "$@"
