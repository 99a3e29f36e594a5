#!/usr/bin/env python3
"""Benchmark: 10,000 watchers on one node (API.md §13).

One single-node kvd (fresh data directory in /tmp). Rounds alternate, in the
same run, between PUT throughput with no watcher and with N watchers
connected (kvbench --op put, 64 connections, 100-byte values over 10,000
keys "kvbench-<n>"). The N watchers watch key=kvbench-<i> (i < N): every PUT
is delivered to exactly one of them, as a service registry's clients each
watching their own key would see it; the reader of all N sockets (this
process, epoll) checks that each receives events. During each "with" round
a probe writes "probe-<k>" with its send time as value 20 times a second,
watched by 10 more watchers on prefix "probe": the delivery latency (PUT
sent -> event read) p50/p99 is measured from them, under the PUT load.

With --mode idle the N watchers watch keys "idle-<i>" that are never
written: the cost of holding them (registered, matched against, kept alive)
without the cost of this process reading their events.

Usage: bench/watch.py [--kvd build/kvd] [--kvbench build/tools/kvbench]
                      [--watchers 10000] [--rounds 3] [--seconds 10]
                      [--mode own-key|idle]
Prints one line per round and a summary, and the load average.
"""
import argparse
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


class Watchers:
    """N watch sockets read by one epoll thread; counts events per socket
    and records the probe's delivery latencies."""

    def __init__(self, port, queries):
        self.sel = selectors.DefaultSelector()
        self.events = [0] * len(queries)
        self.latencies = []
        self.probe = False
        self.stop = False
        self.socks = []
        for i, q in enumerate(queries):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(("GET /watch?%s HTTP/1.1\r\nHost: x\r\n\r\n" % q).encode())
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, [i, b"", False])
            self.socks.append(s)
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            for key, _ in self.sel.select(0.2):
                i, buf, head = key.data
                try:
                    data = key.fileobj.recv(1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    self.sel.unregister(key.fileobj)
                    continue
                now = time.time()
                buf += data
                if not head and b"\r\n\r\n" in buf:
                    buf = buf.split(b"\r\n\r\n", 1)[1]
                    head = True
                while head and b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    if block.startswith(b":"):
                        continue
                    self.events[i] += 1
                    m = re.search(rb'"value": "t([0-9.]+)"', block)
                    if m and self.probe:
                        self.latencies.append(now - float(m.group(1)))
                key.data[1] = buf
                key.data[2] = head

    def close(self):
        self.stop = True
        self.t.join()
        for s in self.socks:
            s.close()


def kvbench(kvbench_bin, port, seconds):
    out = subprocess.run([kvbench_bin, "--url", "http://127.0.0.1:%d" % port, "--op", "put",
                          "--connections", "64", "--duration", "%ds" % seconds, "--keys", "10000",
                          "--value-bytes", "100"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"requests/s: ([0-9.]+)", out).group(1))
    lat = re.search(r"latency ms: p50 ([0-9.]+) p90 [0-9.]+ p99 ([0-9.]+)", out)
    return rps, float(lat.group(1)), float(lat.group(2))


def probe(port, stop, interval=0.05):
    k = 0
    while not stop.is_set():
        http(port, "PUT", "/kv/probe-%d" % (k % 100), ("t%.6f" % time.time()).encode())
        k += 1
        time.sleep(interval)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kvd", default="build/kvd")
    ap.add_argument("--kvbench", default="build/tools/kvbench")
    ap.add_argument("--watchers", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--mode", choices=["own-key", "idle"], default="own-key",
                    help="own-key: watcher i watches kvbench-<i> (the PUTs reach them); "
                    "idle: watcher i watches idle-<i> (registered, never written)")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="kvd-watch-bench-")
    port = free_port()
    proc = subprocess.Popen([a.kvd, "--port", str(port), "--working-dir", root + "/d",
                             "--log-level", "warn"], stderr=open(root + "/log", "wb"))
    try:
        for _ in range(200):
            try:
                if http(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        without, with_, lat_all = [], [], []
        for rnd in range(a.rounds):
            rps, p50, p99 = kvbench(a.kvbench, port, a.seconds)
            without.append(rps)
            print("round %d without watchers: %.0f PUT/s (PUT p50 %.2f ms p99 %.2f ms)"
                  % (rnd, rps, p50, p99), flush=True)
            name = "kvbench" if a.mode == "own-key" else "idle"
            qs = ["key=%s-%d" % (name, i) for i in range(a.watchers)] + ["prefix=probe"] * 10
            w = Watchers(port, qs)
            time.sleep(2)  # every stream open
            w.probe = True
            stop = threading.Event()
            pt = threading.Thread(target=probe, args=(port, stop))
            pt.start()
            rps, p50, p99 = kvbench(a.kvbench, port, a.seconds)
            stop.set()
            pt.join()
            time.sleep(1)
            lat = [x * 1000 for x in w.latencies]
            lat_all += lat
            got = sum(w.events[:a.watchers])
            reached = sum(1 for e in w.events[:a.watchers] if e > 0)
            w.close()
            with_.append(rps)
            print("round %d with %d watchers: %.0f PUT/s (PUT p50 %.2f ms p99 %.2f ms); "
                  "events delivered %d to %d watchers; probe latency ms p50 %.2f p99 %.2f (%d events)"
                  % (rnd, a.watchers, rps, p50, p99, got, reached, pct(lat, 0.5), pct(lat, 0.99),
                     len(lat)), flush=True)
        print("summary: PUT/s without %s, with %s; median %.0f vs %.0f (%.1f %%); "
              "delivery latency ms p50 %.2f p99 %.2f over %d probe events; loadavg %s"
              % (["%.0f" % x for x in without], ["%.0f" % x for x in with_],
                 sorted(without)[len(without) // 2], sorted(with_)[len(with_) // 2],
                 100.0 * (sorted(with_)[len(with_) // 2] / sorted(without)[len(without) // 2] - 1),
                 pct(lat_all, 0.5), pct(lat_all, 0.99), len(lat_all),
                 " ".join(open("/proc/loadavg").read().split()[:3])))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
