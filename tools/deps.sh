#!/usr/bin/env bash
# Installs the Debian packages kvd needs to build and test, when missing.
# Sourced by run.sh and test.sh. Installs only as root (apt-get); otherwise it
# names what is missing and fails.
kvd_ensure_deps() {
	local pkgs=(build-essential cmake pkg-config libuv1-dev libleveldb-dev liblz4-dev
		check libhttp-parser-dev libjansson-dev libssl-dev python3)
	if [ "${1:-}" = "test" ]; then
		# clang + libclang-rt-dev (libFuzzer and the sanitizer runtimes):
		# the fuzzing stage of test.sh.
		pkgs+=(wrk iptables iproute2 libnetfilter-queue-dev clang-format clang libclang-rt-dev)
		# chromium: the web console's browser test (tests/browser); node and
		# npm from Debian only where the machine has none of its own.
		pkgs+=(chromium)
		command -v node >/dev/null || pkgs+=(nodejs)
		command -v npm >/dev/null || pkgs+=(npm)
	fi
	local missing=()
	local p
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "kvd: missing packages: ${missing[*]} (run as root to install them)" >&2
		return 1
	fi
	echo "kvd: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2 || true
	apt-get install -y -qq "${missing[@]}" >&2
}
