#!/usr/bin/env python3
"""Benchmark: time from SIGKILL of the leader to a new leader accepting
writes, over N kills (default 20), on a 3-node loopback cluster.

Usage: bench/failover.py [--kills N] [--nodes K] [--bin build/api/kvd]
Prints each kill's time and the median. The killed node is restarted and
caught up before the next kill. Standard library only."""
import argparse, http.client, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time


def req(port, method, path, body=None, timeout=1.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    except OSError:
        return None, b""
    finally:
        c.close()


def info(port):
    s, b = req(port, "GET", "/cluster/info", timeout=0.5)
    return json.loads(b) if s == 200 else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--bin", default="build/api/kvd")
    ap.add_argument("--base-port", type=int, default=18700)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="kvd-failover-")
    ports = [a.base_port + i for i in range(1, a.nodes + 1)]
    peers = ",".join(":%d" % p for p in ports)
    procs = {}

    def start(p):
        procs[p] = subprocess.Popen([a.bin, "--port", str(p), "--working-dir",
                                     os.path.join(root, str(p)), "--peers", peers,
                                     "--log-level", "warn"], stderr=subprocess.DEVNULL)

    def leader():
        for p in ports:
            if p in procs and procs[p].poll() is None:
                i = info(p)
                if i and i["role"] == "leader":
                    return p, i["term"]
        return None, 0

    try:
        for p in ports:
            start(p)
        times = []
        n = 0
        while len(times) < a.kills:
            deadline = time.time() + 10
            while True:
                lp, term = leader()
                if lp and req(lp, "PUT", "/kv/warm", "x")[0] == 200:
                    break
                if time.time() > deadline:
                    sys.exit("no leader before kill")
                time.sleep(0.05)
            procs[lp].send_signal(signal.SIGKILL)
            procs[lp].wait()
            t0 = time.time()
            n += 1
            done = False
            while time.time() - t0 < 10 and not done:
                for p in ports:
                    if p == lp:
                        continue
                    s, _ = req(p, "PUT", "/kv/after-%d" % n, "v", timeout=0.5)
                    if s == 200:
                        done = True
                        break
                if not done:
                    time.sleep(0.01)
            dt = time.time() - t0
            if not done:
                sys.exit("no new leader accepted a write within 10 s")
            times.append(dt)
            print("kill %2d: leader :%d term %d -> writes accepted after %.0f ms" % (n, lp, term, dt * 1000))
            start(lp)
            time.sleep(0.5)
        print("median %.0f ms, min %.0f ms, max %.0f ms over %d kills" % (
            statistics.median(times) * 1000, min(times) * 1000, max(times) * 1000, len(times)))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
