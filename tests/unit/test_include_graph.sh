#!/bin/sh
# test_include_graph.sh: tools/include-graph.sh passes on the tree and fails
# on a copy of api/ with an include cycle between driver parts (writer.c
# including the driver's node.h) and with a library including the daemon
# (api/http/ including api/log.h), so the check can fail.
#
# Usage: tests/unit/test_include_graph.sh <repo-root>
set -eu

root=$1
script=$root/tools/include-graph.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sh "$script" "$root" >/dev/null

cp -R "$root/api" "$tmp/"
sed -i '1i #include "api/node.h"' "$tmp/api/writer.c"
if sh "$script" "$tmp" >/dev/null 2>"$tmp/err"; then
	echo "FAIL: a cycle writer -> node was not reported" >&2
	exit 1
fi
grep -q "include cycle between driver parts:.*writer -> node" "$tmp/err"

rm -rf "$tmp/api"
cp -R "$root/api" "$tmp/"
sed -i '1i #include "api/log.h"' "$tmp/api/http/http_client.c"
if sh "$script" "$tmp" >/dev/null 2>"$tmp/err"; then
	echo "FAIL: api/http including api/log.h was not reported" >&2
	exit 1
fi
grep -q "library includes the daemon: api/http/http_client.c -> api/log.h" "$tmp/err"
echo "ok"
