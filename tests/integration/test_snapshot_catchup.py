"""test_snapshot_catchup.py: a lagging follower catches up through
InstallSnapshot (ARCHITECTURE.md "Snapshots", API.md §5).

Real 3-node clusters at --snapshot-threshold=100: one follower is cut off
(POST /cluster/partition) while the leader writes 2,000 keys, so the leader
compacts its log past the follower's; after the heal the follower must get a
snapshot, install it, and keep receiving entries after it (its stale reads
become and stay correct). Variants: the follower is SIGKILLed during the
install and restarts with every acknowledged write; a local snapshot is
running on the follower (large state, POST /log/snapshot) when the leader's
snapshot arrives.

Waits are bounded and generous (no timing assertions: catch-up time is
measured by bench/snapshot-catchup.py). Ports come from KVD_TEST_PORT_BASE
(default 21000) + 0..999 so parallel runs of other suites do not collide.
"""

import base64
import os
import random
import re
import socket
import threading
import time
import unittest

import cluster
from cluster import Client, ClusterCase, wait_until

PORT_BASE = int(os.environ.get("KVD_TEST_PORT_BASE", "21000"))


def ports_in_range(n):
    """n ports free now in [PORT_BASE, PORT_BASE + 1000)."""
    rng = random.Random()
    ports = []
    for _ in range(5000):
        if len(ports) == n:
            break
        p = PORT_BASE + rng.randrange(50, 1000)
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
    if len(ports) < n:
        raise RuntimeError("no free ports in %d..%d" % (PORT_BASE, PORT_BASE + 999))
    return ports


cluster.free_ports = ports_in_range

THRESHOLD = ["--snapshot-threshold", "100"]


def write_keys(c, leader, prefix, n, value_len=8, threads=4):
    """Writes n keys prefix<i> = v<i> padded to value_len through the leader
    with a few parallel clients; returns {key: value} of acknowledged writes."""
    acked = {}
    lock = threading.Lock()
    errors = []

    def worker(k0):
        cl = Client(timeout=10.0)
        try:
            for i in range(k0, n, threads):
                key = "%s%05d" % (prefix, i)
                val = ("v%d-" % i).ljust(value_len, "x")
                r = cl.request(leader.host, leader.port, "PUT", "/kv/" + key, val, follow=True)
                if r.status != 200:
                    errors.append((key, r))
                    return
                with lock:
                    acked[key] = val
        except OSError as e:
            errors.append((k0, e))
        finally:
            cl.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    if errors:
        raise AssertionError("writes failed: %r" % errors[:3])
    return acked


def stale_ok(node, expect):
    """True when node's stale reads of every key in expect are correct."""
    for k, v in expect.items():
        try:
            st, body = node.stale_get(k, timeout=2.0)
        except OSError:
            return False
        if st != 200 or body.decode() != v:
            return False
    return True


def read_log(node):
    with open(node.log_path) as f:
        return f.read()


def sample(d, n=50):
    """A fixed sample of d's keys plus its last five."""
    keys = sorted(d)
    rng = random.Random(7)
    pick = rng.sample(keys, min(n, len(keys))) + keys[-5:]
    return {k: d[k] for k in pick}


class SnapshotCatchup(ClusterCase):
    def setUp(self):
        super().setUp()
        self.c = self.make_cluster(3, args=THRESHOLD)
        self.leader, _ = self.c.wait_leader(timeout=15)
        self.follower = [n for n in self.c.nodes if n is not self.leader][0]
        self.others = [n for n in self.c.nodes if n is not self.follower]

    def lag_follower(self, n_keys=2000, value_len=8):
        """Cuts the follower off, writes n_keys, returns the acked writes."""
        self.c.partition(self.others, [self.follower])
        acked = write_keys(self.c, self.leader, "k", n_keys, value_len)
        # The leader has compacted past what the follower holds.
        snap = self.leader.get("/log/snapshot").json()
        self.assertGreater(snap["last-included-index"], 1100)
        return acked

    def assert_receives_after_install(self, acked):
        """After the install the follower keeps up with new entries."""
        more = write_keys(self.c, self.leader, "after", 20)
        expect = dict(sample(acked))
        expect.update(more)
        wait_until(lambda: stale_ok(self.follower, expect), 20,
                   what="follower %s reads every write made after the install" % self.follower.id)
        self.c.wait_applied(timeout=20)
        self.c.assert_no_crash()

    def test_lagging_follower_catches_up_and_keeps_receiving(self):
        acked = self.lag_follower()
        self.c.heal()
        wait_until(lambda: stale_ok(self.follower, sample(acked)), 20,
                   what="follower %s stale reads correct after the heal" % self.follower.id)
        with open(self.follower.log_path) as f:
            self.assertIn("snapshot installed", f.read())
        self.assert_receives_after_install(acked)
        # The leader does not keep re-sending the snapshot.
        log = read_log(self.leader)
        time.sleep(1.0)
        later = read_log(self.leader)
        self.assertEqual(later[len(log):].count("sending snapshot to peer"), 0,
                         "leader keeps streaming snapshots:\n" + later[len(log):][-2000:])

    def test_failed_chunk_write_restarts_stream(self):
        # A snapshot of several chunks (about 3 MB, incompressible).
        self.c.partition(self.others, [self.follower])
        acked = self.write_big("big", 6, 500000)
        acked.update(write_keys(self.c, self.leader, "k", 1500))
        # The follower cannot create its incoming file: every chunk fails.
        incoming = os.path.join(self.follower.data_dir, "snapshots", "incoming.tmp")
        os.makedirs(incoming)
        log_before = len(read_log(self.follower))
        self.c.heal()
        wait_until(lambda: "cannot write snapshot chunk" in read_log(self.follower)[log_before:], 20,
                   what="a failed chunk write on the follower")
        time.sleep(0.3)
        os.rmdir(incoming)
        wait_until(lambda: stale_ok(self.follower, sample(acked)), 30,
                   what="follower reads correct after its chunk writes failed")
        self.assert_receives_after_install(acked)
        # What it installed survives a restart.
        self.follower.kill()
        self.follower.start()
        self.follower.wait_ready(30)
        self.assertTrue(stale_ok(self.follower, sample(acked)))
        self.c.assert_no_crash()

    def test_snapshot_request_during_install_is_answered(self):
        # POST /log/snapshot on a follower busy installing the leader's
        # snapshot waits for the install, then is answered.
        self.c.partition(self.others, [self.follower])
        acked = self.write_big("big", 120)
        acked.update(write_keys(self.c, self.leader, "k", 1500))
        log_before = len(read_log(self.follower))
        self.c.heal()
        wait_until(lambda: "installing snapshot from leader" in read_log(self.follower)[log_before:], 30,
                   interval=0.002, what="the install starting on the follower")
        r = self.follower.request("POST", "/log/snapshot", b"", timeout=30)
        self.assertEqual(r.status, 200, r)
        self.assertIn("snapshot installed", read_log(self.follower)[log_before:])
        # At least the installed snapshot (the leader compacted past 1,100).
        self.assertGreater(r.json()["last-included-index"], 1100)
        self.assert_receives_after_install(acked)

    def write_big(self, prefix, n, size=500000):
        """n incompressible values of size bytes (the snapshot is large and
        slow to write, send and restore)."""
        vals = {}
        cl = Client(timeout=30.0)
        try:
            for i in range(n):
                k = "%s%04d" % (prefix, i)
                v = base64.b64encode(os.urandom(size * 3 // 4)).decode()
                r = cl.request(self.leader.host, self.leader.port, "PUT", "/kv/" + k, v, follow=True)
                self.assertEqual(r.status, 200, r)
                vals[k] = v
        finally:
            cl.close()
        return vals

    def test_follower_killed_during_install_restarts(self):
        # A large state (about 60 MB) so that the install takes a while.
        self.c.partition(self.others, [self.follower])
        acked = self.write_big("big", 120)
        kills = 0
        for delay in (0.0, 0.05, 0.1, 0.15, 0.25):
            # Enough entries that the leader compacts past the follower.
            acked.update(write_keys(self.c, self.leader, "d%d-" % int(delay * 1000), 1500))
            leader_commit = self.leader.info()["commit-index"]
            log_before = len(read_log(self.follower))
            self.c.heal()

            def installing():
                return "installing snapshot from leader" in read_log(self.follower)[log_before:]

            def caught_up():
                i = self.follower.try_info()
                return i is not None and i["commit-index"] >= leader_commit

            wait_until(lambda: installing() or caught_up(), 30, interval=0.005,
                       what="the install starting on the follower")
            if not installing():
                # The previous round's install finished before its kill, and
                # the leader's log still reached back to the follower: it
                # caught up by appends. Nothing to kill during; next round.
                self.c.partition(self.others)
                continue
            kills += 1
            time.sleep(delay)
            self.follower.kill()
            # Cut off again (from the others' side): after the restart it
            # serves what its own disk holds, and the next round lags.
            self.c.partition(self.others)
            self.follower.start()
            self.follower.wait_ready(60)
            self.c.assert_no_crash()
        self.assertGreaterEqual(kills, 3, "too few rounds killed the follower during an install")
        self.c.heal()
        wait_until(lambda: stale_ok(self.follower, sample(acked, 80)), 60,
                   what="restarted follower reads every acknowledged write")
        self.assert_receives_after_install(acked)

    def test_slow_install_streams_snapshot_at_most_twice(self):
        # Issue 7: a follower installing a large snapshot (about 60 MB, a
        # slow install) after a heal gets the snapshot's stream at most twice
        # (one restart may cross the heal); the leader waits for the install
        # instead of streaming the same snapshot again.
        self.c.partition(self.others, [self.follower])
        acked = self.write_big("big", 120)
        acked.update(write_keys(self.c, self.leader, "k", 1500))
        leader_before = len(read_log(self.leader))
        follower_before = len(read_log(self.follower))
        self.c.heal()
        wait_until(lambda: "snapshot installed" in read_log(self.follower)[follower_before:], 60,
                   what="the follower installing the leader's snapshot")
        wait_until(lambda: stale_ok(self.follower, sample(acked, 80)), 60,
                   what="follower %s reads correct after a slow install" % self.follower.id)
        time.sleep(1.0)
        leader_log = read_log(self.leader)

        def sends(text):
            return [line for line in text.splitlines()
                    if "sending snapshot to peer" in line and "peer=%s " % self.follower.id in line + " "]

        sent = sends(leader_log[leader_before:])
        installed = re.search(r'msg="snapshot installed" index=(\d+)',
                              read_log(self.follower)[follower_before:]).group(1)
        before = sends(leader_log[:leader_before])
        if before and re.search(r" index=%s\b" % installed, before[-1]):
            # The leader's retries go on while the follower is cut off: the
            # stream the follower installed started just before the heal
            # and crossed it. It counts as one of the two.
            sent = before[-1:] + sent
        self.assertGreaterEqual(len(sent), 1, "no snapshot stream after the heal")
        self.assertLessEqual(len(sent), 2, "snapshot streamed %d times:\n%s" % (len(sent), "\n".join(sent)))
        self.assert_receives_after_install(acked)

    def test_local_snapshot_running_when_leader_snapshot_arrives(self):
        # The follower holds a large state; the leader drops it while the
        # follower is cut off, so the leader's snapshot is small and arrives
        # while the follower's own (large, slow) snapshot is still running.
        big = self.write_big("big", 150, 1000000)
        self.c.wait_applied(timeout=60)
        self.c.partition(self.others, [self.follower])
        cl = Client(timeout=30.0)
        for k in big:
            r = cl.request(self.leader.host, self.leader.port, "DELETE", "/kv/" + k, follow=True)
            self.assertEqual(r.status, 200, r)
        cl.close()
        acked = write_keys(self.c, self.leader, "k", 1500)
        res = {}

        def post():
            c2 = Client(timeout=60.0)
            try:
                res["r"] = c2.request(self.follower.host, self.follower.port, "POST", "/log/snapshot", b"")
            except OSError as e:
                res["r"] = e
            finally:
                c2.close()

        # Start the local snapshot (about 150 MB, a few hundred ms), then
        # heal: the leader's snapshot (small) arrives while it runs.
        log_before = len(read_log(self.follower))
        t = threading.Thread(target=post)
        t.start()
        wait_until(lambda: "snapshot started" in read_log(self.follower)[log_before:], 10,
                   interval=0.002, what="the follower's local snapshot starting")
        self.c.heal()
        t.join(60)
        self.assertFalse(t.is_alive(), "POST /log/snapshot did not answer")
        self.assertEqual(getattr(res["r"], "status", res["r"]), 200)
        wait_until(lambda: stale_ok(self.follower, sample(acked)), 30,
                   what="follower reads correct after a leader snapshot met a local one")
        for k in list(big)[:5]:
            st, _ = self.follower.stale_get(k)
            self.assertEqual(st, 404, "deleted key %s still on the follower" % k)
        self.assert_receives_after_install(acked)
        with open(self.follower.log_path) as f:
            self.assertIn("snapshot installed", f.read())

if __name__ == "__main__":
    unittest.main()
