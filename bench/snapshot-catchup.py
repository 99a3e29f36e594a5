#!/usr/bin/env python3
"""Benchmark: how long a lagging follower takes to catch up through
InstallSnapshot after a partition heals, on a 3-node loopback cluster at
--snapshot-threshold=100.

One follower is cut off (POST /cluster/partition); the leader is given a
state of --mb megabytes (incompressible 1 MB values, so the snapshot file is
as large) plus enough small writes that it compacts its log past the
follower; then the partition is healed. Measured from the heal:
  received  the follower logs "snapshot received from leader" (the whole
            stream is on its disk),
  installed the follower logs "snapshot installed",
  current   the follower's last-applied reaches the leader's commit index
            as it was at the heal (GET /cluster/info, polled every 5 ms).
Repeated --runs times (fresh cluster each); prints each run and the medians.

Usage: bench/snapshot-catchup.py [--mb 100] [--runs 3] [--bin build/kvd]
       [--port-base 21000]
Standard library only (reuses tests/integration/cluster.py)."""
import argparse
import base64
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def log_time(line):
    m = re.search(r"ts=(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+\.\d+)Z", line)
    if not m:
        return None
    y, mo, d, h, mi, s = m.groups()
    return time.mktime((int(y), int(mo), int(d), int(h), int(mi), 0, 0, 0, 0)) - time.timezone + float(s)


def first_after(path, pattern, t0):
    with open(path) as f:
        for line in f:
            if pattern in line:
                t = log_time(line)
                if t is not None and t >= t0:
                    return t
    return None


def one_run(cluster_mod, binpath, mb, tmp):
    cluster_mod.KVD_BIN = binpath
    c = cluster_mod.Cluster(tmp, 3, args=["--snapshot-threshold", "100"])
    c.start(20)
    try:
        leader, _ = c.wait_leader(timeout=20)
        follower = [n for n in c.nodes if n is not leader][0]
        others = [n for n in c.nodes if n is not follower]
        c.partition(others, [follower])
        cl = cluster_mod.Client(timeout=30)
        value_raw = 786432  # base64: 1,048,576 bytes
        for i in range(mb):
            v = base64.b64encode(os.urandom(value_raw)).decode()
            r = cl.request(leader.host, leader.port, "PUT", "/kv/big%05d" % i, v, follow=True)
            assert r.status == 200, r
        for i in range(1300):
            r = cl.request(leader.host, leader.port, "PUT", "/kv/k%05d" % i, "v%d" % i, follow=True)
            assert r.status == 200, r
        cl.close()
        target = leader.info()["commit-index"]
        t0 = time.time()
        c.heal()
        cluster_mod.wait_until(
            lambda: (follower.try_info() or {}).get("last-applied", 0) >= target,
            120, interval=0.005, what="follower current")
        t_current = time.time()
        received = first_after(follower.log_path, "snapshot received from leader", t0 - 0.01)
        installed = first_after(follower.log_path, "snapshot installed", t0 - 0.01)
        snap = [l for l in open(leader.log_path) if "snapshot taken" in l][-1]
        size = int(re.search(r"bytes=(\d+)", snap).group(1))
        return {
            "received": (received - t0) if received else float("nan"),
            "installed": (installed - t0) if installed else float("nan"),
            "current": t_current - t0,
            "bytes": size,
        }
    finally:
        c.kill_all()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "kvd"))
    ap.add_argument("--port-base", type=int, default=21000)
    a = ap.parse_args()
    os.environ["KVD_TEST_PORT_BASE"] = str(a.port_base)
    import cluster as cluster_mod
    import test_snapshot_catchup  # noqa: F401  (ports in --port-base..+999)

    results = []
    for i in range(a.runs):
        tmp = tempfile.mkdtemp(prefix="kvd-bench-catchup-")
        try:
            r = one_run(cluster_mod, os.path.abspath(a.bin), a.mb, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        results.append(r)
        print("run %d: snapshot %.1f MB: received %.3f s, installed %.3f s, current %.3f s after the heal"
              % (i + 1, r["bytes"] / 1e6, r["received"], r["installed"], r["current"]), flush=True)
    for k in ("received", "installed", "current"):
        print("median %s: %.3f s" % (k, statistics.median(r[k] for r in results)))


if __name__ == "__main__":
    main()
