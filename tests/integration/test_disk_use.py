"""test_disk_use.py: disk use is bounded by the snapshot threshold (issue 7,
docs/operations.md "Disk use").

A 3-node cluster at --snapshot-threshold=100 takes 20,000 overwrites of 100
keys with 1 KB values (random, so nothing compresses them away). Whatever the
log, the snapshots and LevelDB keep, each data directory must stay under
10 MB, sampled all along the run and at the end: the live data is 100 KB, the
log kept behind a snapshot is at most threshold + trailing window entries plus
one partly used segment, and LevelDB's own log is bounded by its memtable.
Real kvd processes on loopback; ports in 22000-22999."""

import binascii
import os
import random
import socket
import threading
import unittest

import cluster
from cluster import ClusterCase, Client, wait_until

KEYS = 100
WRITES = 20000
VALUE_SIZE = 1024
LIMIT_BYTES = 10 * 1000 * 1000
THREADS = 8
PORT_RANGE = (22000, 23000)


def ports_in_range(n):
    """n ports of PORT_RANGE free on 127.0.0.1 just now."""
    rng = random.Random()
    ports = []
    for _ in range(1000):
        if len(ports) == n:
            return ports
        p = rng.randrange(*PORT_RANGE)
        if p in ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
            ports.append(p)
        except OSError:
            pass
        finally:
            s.close()
    raise RuntimeError("no free ports in %r" % (PORT_RANGE,))


def dir_bytes(path):
    """Bytes allocated on disk by every file under path, and the largest."""
    total = 0
    files = []
    for root, _, names in os.walk(path):
        for name in names:
            p = os.path.join(root, name)
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            size = min(st.st_size, st.st_blocks * 512) if st.st_blocks else st.st_size
            total += size
            files.append((size, os.path.relpath(p, path)))
    files.sort(reverse=True)
    return total, files[:8]


class TestDiskUse(ClusterCase):
    def setUp(self):
        super().setUp()
        saved = cluster.free_ports
        cluster.free_ports = ports_in_range
        self.addCleanup(setattr, cluster, "free_ports", saved)

    def test_overwrites_stay_under_bound(self):
        c = self.make_cluster(3, args=["--snapshot-threshold", "100"])
        c.wait_leader()
        errors = []
        peaks = {}
        done = threading.Event()

        def sampler():
            while not done.wait(0.2):
                for n in c.nodes:
                    b, files = dir_bytes(n.data_dir)
                    if b > peaks.get(n.id, (0,))[0]:
                        peaks[n.id] = (b, files[:4])
        counter = iter(range(WRITES))
        lock = threading.Lock()

        def writer():
            client = Client(timeout=10.0)
            try:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    value = binascii.hexlify(os.urandom(VALUE_SIZE // 2)).decode()
                    r = c.put("k%03d" % (i % KEYS), value, client=client, retries_s=20.0)
                    if r.status != 200:
                        errors.append(r)
                        return
            except Exception as e:  # reported below
                errors.append(e)
            finally:
                client.close()

        watcher = threading.Thread(target=sampler)
        watcher.start()
        threads = [threading.Thread(target=writer) for _ in range(THREADS)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
        finally:
            done.set()
            watcher.join()
        self.assertEqual(errors, [])
        for nid, (b, files) in sorted(peaks.items()):
            print("%s: peak %d bytes; largest %r" % (nid, b, files[:3]))
        over = {nid: p for nid, p in peaks.items() if p[0] >= LIMIT_BYTES}
        self.assertEqual(over, {}, "data directories over %d bytes during the run" % LIMIT_BYTES)
        c.wait_applied(timeout=30.0)
        # Let the last snapshot and log compaction finish on every node.
        report = {}

        def all_under():
            for n in c.nodes:
                report[n.id] = dir_bytes(n.data_dir)
            return all(b < LIMIT_BYTES for b, _ in report.values())

        try:
            wait_until(all_under, 15.0, interval=0.5, what="data directories under 10 MB")
        except AssertionError:
            self.fail("data directories over %d bytes: %r" % (LIMIT_BYTES, report))
        for nid, (b, files) in sorted(report.items()):
            print("%s: %d bytes at the end; largest %r" % (nid, b, files[:3]))


if __name__ == "__main__":
    unittest.main()
