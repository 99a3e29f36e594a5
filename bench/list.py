#!/usr/bin/env python3
"""Benchmark: range listing throughput (API.md §11) over 1,000,000 keys.

Builds a data directory of N keys ("key-<7 digits>", 100-byte values) with
kvload (JSON Lines), starts a single node on it, then pages through every
key with GET /kv?limit=1000&after=<last key> on one keep-alive connection,
--passes times for each consistency (linearizable through the read index;
consistency=stale), alternating, and prints keys/s per pass (end to end:
the client's JSON parsing of each page is included) and the load average.

Usage: bench/list.py [--kvd build/kvd] [--kvload build/tools/kvload]
                     [--keys 1000000] [--passes 3] [--limit 1000]
"""
import argparse
import http.client
import json
import os
import random
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kvd", default="build/kvd")
    ap.add_argument("--kvload", default="build/tools/kvload")
    ap.add_argument("--keys", type=int, default=1000000)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--limit", type=int, default=1000)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="kvd-list-bench-")
    port = free_port()
    proc = None
    try:
        rng = random.Random(1)
        alphabet = string.ascii_letters + string.digits
        with open(root + "/dump.jsonl", "w") as f:
            for i in range(a.keys):
                v = "".join(rng.choice(alphabet) for _ in range(100)) if i < 1000 else \
                    ("%07d" % i) * 14 + "xx"
                f.write('{"key": "key-%07d", "value": "%s", "revision": %d}\n' % (i, v, i + 1))
        t0 = time.monotonic()
        subprocess.run([a.kvload, "-i", root + "/dump.jsonl", "--id", ":%d" % port,
                        "--data-dir", root + "/d"], check=True, capture_output=True)
        print("kvload: %d keys in %.1f s" % (a.keys, time.monotonic() - t0), flush=True)
        proc = subprocess.Popen([a.kvd, "--port", str(port), "--working-dir", root + "/d",
                                 "--log-level", "warn"], stderr=open(root + "/log", "wb"))
        conn = None
        for _ in range(400):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/health")
                if conn.getresponse().read() == b"ok\n":
                    break
            except OSError:
                conn = None
                time.sleep(0.05)
        results = {"linearizable": [], "stale": []}
        for p in range(a.passes):
            for mode in ("linearizable", "stale"):
                q = "&consistency=stale" if mode == "stale" else ""
                after, n, pages = "", 0, 0
                t0 = time.monotonic()
                while True:
                    conn.request("GET", "/kv?limit=%d%s%s" % (a.limit, q, "&after=" + after if after else ""))
                    r = conn.getresponse()
                    body = r.read()
                    assert r.status == 200, (r.status, body[:200])
                    o = json.loads(body)
                    n += len(o["items"])
                    pages += 1
                    if not o["more"]:
                        break
                    after = o["items"][-1]["key"]
                secs = time.monotonic() - t0
                assert n == a.keys, n
                results[mode].append(n / secs)
                print("pass %d %s: %d keys in %d pages, %.2f s, %.0f keys/s"
                      % (p, mode, n, pages, secs, n / secs), flush=True)
        for mode, xs in results.items():
            print("summary %s: keys/s %s, median %.0f" % (mode, ["%.0f" % x for x in xs],
                                                          sorted(xs)[len(xs) // 2]))
        print("loadavg %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
