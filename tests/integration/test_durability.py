"""Durability and recovery of one node (API.md §6): SIGTERM and SIGKILL
cycles, a crash under concurrent writers, the data directory layout, torn
tails of the Raft log and a checksum failure in the middle of a segment."""

import json
import os
import re
import signal
import threading
import time
import unittest

from kvdtest import KvdTestCase, RawConn


def records_end(path):
    """Bytes of path up to its last non-zero byte: the end of the records of
    a log segment whose file also holds preallocated zeros after them
    (docs/formats.md, "Preallocation"). The values written here end in
    non-zero bytes."""
    with open(path, "rb") as f:
        data = f.read()
    return len(data.rstrip(b"\x00"))


def segment_files(data_dir):
    """Log segment files under DATA/raft/, oldest first. A segment is a
    regular file whose name says so (seg-*, *.seg, *segment*, *.log, or a
    name made of hex digits); term/vote metadata, locks and snapshots are
    not."""
    d = os.path.join(data_dir, "raft")
    out = []
    for name in os.listdir(d):
        p = os.path.join(d, name)
        if not os.path.isfile(p):
            continue
        low = name.lower()
        if low.startswith("seg") or low.endswith(".seg") or "segment" in low or low.endswith(".log") \
                or re.fullmatch(r"[0-9a-f]{8,}", low):
            out.append(p)

    def key(p):
        digits = re.findall(r"[0-9a-fA-F]+", os.path.basename(p))
        return (int(digits[-1], 16) if digits else -1, os.path.getmtime(p))

    return sorted(out, key=key)


class Model:
    """Expected key-value state: key -> value (bytes) or None (absent), and
    keys whose last write was not acknowledged: key -> set of allowed
    states."""

    def __init__(self):
        self.state = {}
        self.maybe = {}
        self.lock = threading.Lock()

    def acked(self, key, value):
        with self.lock:
            self.state[key] = value
            self.maybe.pop(key, None)

    def unknown(self, key, value):
        with self.lock:
            self.maybe[key] = {self.state.get(key), value}


class DurabilityTest(KvdTestCase):
    def _write_batch(self, node, model, prefix, n, conn=None):
        """n acknowledged PUTs (and some DELETEs / overwrites) on one
        keep-alive connection."""
        own = conn is None
        c = conn or node.conn()
        try:
            for i in range(n):
                key = "%s-%d" % (prefix, i)
                val = ("%s value %d \U0001F600\t" % (prefix, i)).encode()
                self.assertText(c.request("PUT", "/kv/" + key, val), 200, b"")
                model.acked(key, val)
                if i % 7 == 3:
                    self.assertText(c.request("DELETE", "/kv/" + key), 200, b"")
                    model.acked(key, None)
                if i % 5 == 1:
                    val2 = val + b" v2"
                    self.assertText(c.request("PUT", "/kv/" + key, val2), 200, b"")
                    model.acked(key, val2)
        finally:
            if own:
                c.close()

    def _check(self, node, model, resolve=False):
        """Every acknowledged state holds; unacknowledged writes are either.
        resolve: afterwards, the observed outcome of each unacknowledged write
        becomes the expected state (it must not change any more)."""
        if resolve:
            self._check(node, model)
            with node.conn() as c:
                for key in list(model.maybe):
                    r = c.request("GET", "/kv/" + key)
                    model.acked(key, r.body if r.status == 200 else None)
            return
        with node.conn() as c:
            for key, val in sorted(model.state.items()):
                r = c.request("GET", "/kv/" + key)
                allowed = model.maybe.get(key, {val})
                got = r.body if r.status == 200 else None
                if r.status not in (200, 404):
                    self.fail("GET %s: %r" % (key, r))
                self.assertIn(got, allowed, "key %s: got %r, expected one of %r" % (key, r, allowed))
            for key, allowed in model.maybe.items():
                if key in model.state:
                    continue
                r = c.request("GET", "/kv/" + key)
                got = r.body if r.status == 200 else None
                self.assertIn(got, allowed, "key %s: got %r" % (key, r))

    def _assert_sigterm_exit_0(self, node, sig=signal.SIGTERM):
        t0 = time.monotonic()
        node.signal(sig)
        rc = node.wait_exit(5.0)
        took = time.monotonic() - t0
        if rc is None:
            node.kill()
            self.fail("kvd did not exit within 5 s of %s" % sig.name)
        self.assertEqual(rc, 0, "exit status after %s" % sig.name)
        return took

    def test_sigterm_cycles_keep_all_data(self):
        node = self.start_node()
        model = Model()
        for cycle in range(4):
            self._write_batch(node, model, "term%d" % cycle, 40)
            self._assert_sigterm_exit_0(node)
            node.start()
            self._check(node, model)

    def test_sigint_exits_0_and_keeps_data(self):
        node = self.start_node()
        model = Model()
        self._write_batch(node, model, "int", 30)
        self._assert_sigterm_exit_0(node, signal.SIGINT)
        node.start()
        self._check(node, model)

    def test_sigkill_cycles_keep_acknowledged_writes(self):
        node = self.start_node()
        model = Model()
        for cycle in range(4):
            with node.conn() as c:
                self._write_batch(node, model, "kill%d" % cycle, 40, conn=c)
                # the very last acknowledged write, then the kill at once
                key = "kill%d-last" % cycle
                val = ("last of cycle %d" % cycle).encode()
                self.assertText(c.request("PUT", "/kv/" + key, val), 200, b"")
                model.acked(key, val)
                node.proc.kill()
            node.kill()
            node.start()
            self._check(node, model)

    def test_sigkill_after_clear_keeps_clear(self):
        node = self.start_node()
        model = Model()
        self._write_batch(node, model, "pre", 20)
        self.assertText(node.request("DELETE", "/clear"), 200, b"")
        for k in list(model.state):
            model.acked(k, None)
        self._write_batch(node, model, "post", 5)
        node.kill()
        node.start()
        self._check(node, model)

    def _crash_under_writers(self, node, model, rnd, writers=8):
        """Runs writers (PUTs, and DELETEs of their previous key) on keep-alive
        connections and SIGKILLs the node while they run."""
        stop = threading.Event()
        counts = [0] * writers
        errors = []

        def writer(t):
            try:
                c = RawConn(node.port, timeout=10)
            except OSError as e:
                errors.append("writer %d could not connect: %s" % (t, e))
                return
            i = 0
            try:
                while not stop.is_set():
                    key = "r%dw%d-%d" % (rnd, t, i)
                    val = ("round %d writer %d op %d" % (rnd, t, i)).encode()
                    model.unknown(key, val)
                    r = c.request("PUT", "/kv/" + key, val)
                    if r.status != 200:
                        errors.append("PUT %s: %r" % (key, r))
                        return
                    model.acked(key, val)
                    counts[t] += 1
                    if i % 4 == 2:  # delete the previous key
                        prev = "r%dw%d-%d" % (rnd, t, i - 1)
                        model.unknown(prev, None)
                        r = c.request("DELETE", "/kv/" + prev)
                        if r.status != 200:
                            errors.append("DELETE %s: %r" % (prev, r))
                            return
                        model.acked(prev, None)
                    i += 1
            except (OSError, ValueError):
                pass  # the node died mid-request: that write stays "unknown"
            finally:
                c.close()

        threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(writers)]
        for th in threads:
            th.start()
        # kill once every writer has had acknowledged writes (bounded wait)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20 and (min(counts) < 20 or time.monotonic() - t0 < 1.0):
            time.sleep(0.05)
        node.proc.kill()
        stop.set()
        for th in threads:
            th.join(15)
        self.assertFalse(any(th.is_alive() for th in threads), "writers hung")
        self.assertEqual(errors, [])
        self.assertGreater(sum(counts), 100, "too few acknowledged writes to mean anything")
        node.kill()

    def test_sigkill_under_concurrent_writers_loses_no_acked_write(self):
        node = self.start_node()
        model = Model()
        for rnd in range(2):
            self._crash_under_writers(node, model, rnd, writers=16)
            node.start()
            self._check(node, model, resolve=True)
        # and the node takes writes again
        self.assertPutOk(node, "after-crash", "yes")
        self.assertValue(node, "after-crash", "yes")

    def test_data_directory_layout(self):
        node = self.start_node()
        self.assertPutOk(node, "k", "v")
        for sub in ("raft", "kv"):
            p = os.path.join(node.data_dir, sub)
            self.assertTrue(os.path.isdir(p), "%s missing; data dir holds %r" % (p, os.listdir(node.data_dir)))
        segs = segment_files(node.data_dir)
        self.assertTrue(segs, "no log segment in %r" % os.listdir(os.path.join(node.data_dir, "raft")))
        self.assertGreater(os.path.getsize(segs[-1]), 0)

    # ---- torn tails
    def _crash_with_data(self, n=50):
        node = self.start_node()
        model = Model()
        with node.conn() as c:
            for i in range(n):
                key = "t%d" % i
                val = ("torn tail test value %d" % i).encode()
                self.assertText(c.request("PUT", "/kv/" + key, val), 200, b"")
                model.acked(key, val)
        node.kill()
        segs = segment_files(node.data_dir)
        self.assertTrue(segs, "no log segment in %r" % os.listdir(os.path.join(node.data_dir, "raft")))
        return node, model, segs[-1]

    def _restart_after_damage(self, node, model):
        node.start()
        self._check(node, model)
        # the log keeps working after the discarded tail, across restarts
        self.assertPutOk(node, "after-tail", "fine")
        self._assert_sigterm_exit_0(node)
        node.start()
        self._check(node, model)
        self.assertValue(node, "after-tail", "fine")

    def test_torn_tail_garbage_appended_is_discarded(self):
        node, model, seg = self._crash_with_data()
        with open(seg, "ab") as f:
            f.write(b"\x13\x37garbage that is not a record\xde\xad\xbe\xef" * 3)
        self._restart_after_damage(node, model)

    def test_torn_tail_zeros_appended_is_discarded(self):
        node, model, seg = self._crash_with_data()
        with open(seg, "ab") as f:
            f.write(b"\x00" * 4096)
        self._restart_after_damage(node, model)

    def test_torn_tail_truncated_last_record_is_discarded(self):
        node, model, seg = self._crash_with_data()
        os.truncate(seg, records_end(seg) - 5)
        # the cut record (the last write) may be lost; everything before stays
        model.maybe["t49"] = {model.state["t49"], None}
        self._restart_after_damage(node, model)

    def test_torn_tail_partial_unapplied_record_is_discarded(self):
        # A crash while appending a new record: its first bytes are on disk,
        # the rest is not, and it was never acknowledged nor applied. Built
        # from the bytes of a real record: the segment grows by exactly one
        # record for one PUT; half of a copy of it is appended.
        node, model, seg = self._crash_with_data()
        node.start()
        # a first write commits whatever the restarted leader appends itself
        self.assertPutOk(node, "warm-up", "w")
        model.acked("warm-up", b"w")
        info0 = node.request("GET", "/cluster/info").body
        size0 = records_end(seg)
        self.assertPutOk(node, "one-more", "one more record")
        model.acked("one-more", b"one more record")
        info1 = node.request("GET", "/cluster/info").body
        node.kill()
        size1 = records_end(seg)
        segs = segment_files(node.data_dir)
        if segs[-1] != seg or size1 <= size0:
            self.skipTest("the PUT did not land in the same segment")
        ci0 = json.loads(info0)["commit-index"]
        ci1 = json.loads(info1)["commit-index"]
        if ci1 != ci0 + 1:
            self.skipTest("the PUT added %d log entries, not one" % (ci1 - ci0))
        with open(seg, "rb") as f:
            f.seek(size0)
            rec = f.read(size1 - size0)
        with open(seg, "r+b") as f:  # after the last record, in preallocated space if any
            f.seek(size1)
            f.write(rec[:len(rec) // 2])
        self._restart_after_damage(node, model)

    # ---- logs of several segments (the default rollover is at 64 MiB)
    def _crash_with_segments(self):
        """70 acknowledged 1 MiB values, then SIGKILL; the log then spans at
        least two segment files."""
        node = self.start_node()
        model = Model()
        with node.conn(timeout=30) as c:
            for i in range(70):
                key = "big%d" % i
                val = ("%04d" % i).encode() + b"0123456789abcdef" * 65535 + b"abcdefghijkl"
                self.assertText(c.request("PUT", "/kv/" + key, val), 200, b"")
                model.acked(key, val)
        node.kill()
        segs = segment_files(node.data_dir)
        if len(segs) < 2:
            self.skipTest("70 MiB of values still fit in one segment: %r" % segs)
        return node, model, segs

    def test_log_of_several_segments_survives_sigkill_and_torn_tail(self):
        node, model, segs = self._crash_with_segments()
        with open(segs[-1], "ab") as f:
            f.write(b"\xff\x00torn" * 100)
        node.start()
        self._check(node, model)
        self.assertPutOk(node, "after", "ok")
        node.kill()
        node.start()
        self._check(node, model)
        self.assertValue(node, "after", "ok")

    def test_bit_flip_in_older_segment_stops_startup_naming_file(self):
        node, model, segs = self._crash_with_segments()
        seg = segs[0]
        size = os.path.getsize(seg)
        off = size // 2
        with open(seg, "r+b") as f:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0x01]))
        node.start(wait=False)
        rc = node.wait_exit(15.0)
        if rc is None:
            node.kill()
            self.fail("kvd kept running on a checksum failure at offset %d of %s" % (off, seg))
        self.assertNotEqual(rc, 0)
        err = node.stderr_text().split("=== start 2:", 1)[-1]
        self.assertIn(os.path.basename(seg), err, "stderr does not name the file")
        self.assertRegex(err, r"offset\D{0,3}\d+", "stderr does not name the offset")
        self.assertEqual(os.path.getsize(seg), size, "the damaged segment was changed")

    def test_bit_flip_mid_segment_stops_startup_naming_file(self):
        node, model, seg = self._crash_with_data(n=300)
        size = os.path.getsize(seg)
        off = records_end(seg) // 2
        with open(seg, "r+b") as f:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0x10]))
        node.start(wait=False)
        rc = node.wait_exit(15.0)
        if rc is None:
            up = node.running()
            node.kill()
            self.fail("kvd kept running (up=%s) on a segment with a checksum failure at offset %d of %s"
                      % (up, off, seg))
        self.assertNotEqual(rc, 0)
        err = node.stderr_text().split("=== start 2:", 1)[-1]
        self.assertIn(os.path.basename(seg), err, "stderr does not name the file")
        self.assertRegex(err, r"offset\D{0,3}\d+", "stderr does not name the offset")
        self.assertTrue(os.path.exists(seg) and os.path.getsize(seg) == size,
                        "the damaged segment was changed (nothing may be silently dropped)")


if __name__ == "__main__":
    unittest.main()
