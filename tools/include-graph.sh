#!/bin/sh
# include-graph.sh: prints the include graph of api/ and checks it (issue 7):
# no include cycle between the node driver's parts, and the two libraries
# api/http/ (kvd_http) and api/common/ (kvd_common) include nothing else of
# api/.
#
# Usage: tools/include-graph.sh [repo-root]     (default: the current directory)
#
# Output:
#   api/<file> -> api/<header>      every #include "api/..." of a file in api/
#   part: <a> -> <b>                the same between the driver's parts, where a
#                                   part is a file name without .c/.h (writer.c
#                                   and writer.h are part "writer";
#                                   node_internal.h, the handle the driver gives
#                                   its parts, is a part of its own)
# Exit: 0 when the checks pass; 1 with one line per problem on stderr (a
# cycle names the parts on it); 2 for a usage error.
set -eu

root=${1:-.}
if [ ! -d "$root/api" ]; then
	echo "include-graph.sh: no api/ directory under '$root'" >&2
	exit 2
fi
cd "$root"

# The node driver's parts: the loop driver and what it routes the update to.
DRIVER_PARTS="node node_internal node_state recovery writer applier snapshots transport membership cluster_id"

edges=$(find api -name '*.[ch]' | LC_ALL=C sort | while read -r f; do
	sed -n 's|^[[:space:]]*#[[:space:]]*include[[:space:]]*"\(api/[^"]*\)".*|\1|p' "$f" |
		while read -r h; do echo "$f -> $h"; done
done)
printf '%s\n' "$edges" | LC_ALL=C sort -u

part() { basename "$1" | sed 's/\.[ch]$//'; }
is_driver() { case " $DRIVER_PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

pairs=$(printf '%s\n' "$edges" | while read -r from _ to; do
	[ -n "$from" ] || continue
	a=$(part "$from")
	b=$(part "$to")
	if [ "$a" != "$b" ] && is_driver "$a" && is_driver "$b"; then echo "$a $b"; fi
done | LC_ALL=C sort -u)
printf '%s\n' "$pairs" | sed -n 's/^\(.*\) \(.*\)$/part: \1 -> \2/p'

status=0

# Cycles: repeatedly drop edges into parts that include no remaining part
# and out of parts that no remaining part includes; what is left is on a
# cycle.
left=$pairs
while :; do
	next=$(printf '%s\n' "$left" | awk 'NF == 2 { e[NR] = $0; from[$1] = 1; to[$2] = 1 }
		END { for (i in e) { split(e[i], x, " "); if ((x[2] in from) && (x[1] in to)) print e[i] } }' |
		LC_ALL=C sort)
	[ "$next" != "$left" ] || break
	left=$next
done
if [ -n "$left" ]; then
	echo "include-graph.sh: include cycle between driver parts:" \
		"$(printf '%s\n' "$left" | awk '{ printf "%s%s -> %s", sep, $1, $2; sep = ", " }')" >&2
	status=1
fi

# The libraries stay libraries.
bad=$(printf '%s\n' "$edges" | awk '
	$1 ~ /^api\/http\// && $3 !~ /^api\/http\// { print }
	$1 ~ /^api\/common\// && $3 !~ /^api\/common\// { print }')
if [ -n "$bad" ]; then
	printf '%s\n' "$bad" | sed 's/^/include-graph.sh: library includes the daemon: /' >&2
	status=1
fi

if [ "$status" -eq 0 ]; then
	echo "ok: no include cycle between driver parts; api/http and api/common include only themselves"
fi
exit "$status"
