"""Watch (API.md §13) against real kvd processes: GET /watch as Server-Sent
Events, every status and header, the exact event text, order under
concurrent writers (checked against GET /log), transactions, clear, resume
with Last-Event-ID across a follower restart and a leader change, 410 after
compaction, replay after a crash (SIGKILL) from the log after the snapshot,
a slow watcher cut at 8 MiB, keep-alive,
2,000 watchers on one node, and the stream's end at shutdown.

The expected stream of a watcher is computed from the log: every COMMAND
entry of GET /log is a PUT, DELETE or CLEAR here (only the Crash test writes
conditional commands, and it compares with what a live watcher saw instead),
so it is one change of its key at its index.
"""
import json
import os
import resource
import signal
import socket
import threading
import time
import unittest

import cluster
import kvdtest
from kvdtest import KvdTestCase, wait_until


class Watch:
    """One GET /watch on a raw socket: status, headers, then events parsed
    from the stream as they come."""

    def __init__(self, port, query="", headers=None, timeout=10.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.raw = b""
        self.eof = False
        hdrs = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        self.sock.sendall(("GET /watch%s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (query, hdrs)).encode())
        self.status = None
        self.headers = {}
        self.body = b""

    def read_head(self):
        while b"\r\n\r\n" not in self.raw:
            self._fill()
            if self.eof:
                raise AssertionError("EOF before headers: %r" % self.raw)
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if "content-length" in self.headers:
            n = int(self.headers["content-length"])
            while len(self.raw) < n:
                self._fill()
            self.body = self.raw[:n]
        return self

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            self.eof = True
        self.raw += data

    def next_block(self, timeout=10.0):
        """The next SSE block (text without the blank line), or None at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n\n" not in self.raw:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no event within %.1f s (have %r)" % (timeout, self.raw[-200:]))
            self.sock.settimeout(left)
            self._fill()
        block, self.raw = self.raw.split(b"\n\n", 1)
        return block.decode("utf-8")

    def next_event(self, timeout=10.0):
        """(id, event, data dict) of the next event, skipping comments; None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            block = self.next_block(max(0.001, deadline - time.monotonic()))
            if block is None:
                return None
            fields = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    continue
                k, _, v = line.partition(": ")
                fields[k] = v
            if not fields:
                continue
            return int(fields["id"]), fields["event"], json.loads(fields["data"])

    def events(self, n, timeout=10.0):
        out = []
        for _ in range(n):
            e = self.next_event(timeout)
            if e is None:
                raise AssertionError("EOF after %d of %d events: %r" % (len(out), n, out))
            out.append(e)
        return out

    def close(self):
        self.sock.close()


def log_changes(node_port, upto=None):
    """The changes of the log as events, [(rev, type, key, value)], from the
    node's GET /log (every COMMAND entry is PUT/DELETE/CLEAR here)."""
    out = []
    frm = 1
    while True:
        with kvdtest.RawConn(node_port) as c:
            resp = c.request("GET", "/log?from=%d&limit=1000" % frm)
        assert resp.status == 200, resp
        o = json.loads(resp.body)
        if o["first-index"] > 1 and frm == 1:
            raise AssertionError("log compacted: %r" % o["first-index"])
        for e in o["entries"]:
            cmd = e.get("command", "")
            if cmd.startswith("PUT "):
                _, k, v = cmd.split(" ", 2)
                out.append((e["index"], "put", k, v))
            elif cmd.startswith("DELETE "):
                out.append((e["index"], "delete", cmd[7:], None))
            elif cmd == "CLEAR":
                out.append((e["index"], "clear", None, None))
            elif cmd.startswith("TXN "):  # written here without comparisons
                t = json.loads(cmd[4:])
                assert not t.get("compare"), t
                for op in t.get("success", []):
                    if op["op"] in ("put", "delete"):
                        out.append((e["index"], op["op"], op["key"], op.get("value")))
        if not o["entries"]:
            break
        frm = o["entries"][-1]["index"] + 1
        if upto is not None and frm > upto:
            break
    return out


def as_changes(events):
    return [(i, t, d.get("key"), d.get("value")) for i, t, d in events]


def matching(changes, prefix="", key=None):
    return [c for c in changes
            if c[1] == "clear" or (key is not None and c[2] == key)
            or (key is None and c[2].startswith(prefix))]


class SingleNode(KvdTestCase):
    def setUp(self):
        super().setUp()
        self.node = self.start_node(env={"KVD_WATCH_KEEPALIVE_MS": "300"})

    def put(self, key, value):
        r = self.node.request("PUT", "/kv/" + key, value)
        self.assertEqual(r.status, 200, r)
        return int(r.header("ETag").strip('"'))

    def watch(self, query="", headers=None, **kw):
        w = Watch(self.node.port, query, headers, **kw)
        self.addCleanup(w.close)
        return w

    def test_stream_headers_and_exact_text(self):
        r0 = self.put("a", "0")
        w = self.watch("?prefix=a").read_head()
        self.assertEqual(w.status, 200)
        self.assertEqual(w.headers["content-type"], "text/event-stream")
        self.assertNotIn("content-length", w.headers)
        r1 = self.put("ab", 'x"y\\z \U0001F600')
        self.put("b", "no")
        r = self.node.request("DELETE", "/kv/a")
        self.assertEqual(r.status, 200)
        r = self.node.request("DELETE", "/clear")
        self.assertEqual(r.status, 200)
        r = self.node.request("POST", "/txn", json.dumps(
            {"success": [{"op": "put", "key": "a1", "value": "v"}, {"op": "get", "key": "zz"},
                         {"op": "delete", "key": "a2"}]}))
        self.assertEqual(r.status, 200)
        rt = json.loads(r.body)["revision"]
        expect = (
            'id: %d\nevent: put\ndata: {"key": "ab", "value": "x\\"y\\\\z \U0001F600", "revision": %d}\n\n'
            'id: %d\nevent: delete\ndata: {"key": "a", "revision": %d}\n\n'
            'id: %d\nevent: clear\ndata: {"revision": %d}\n\n'
            'id: %d\nevent: put\ndata: {"key": "a1", "value": "v", "revision": %d}\n\n'
            'id: %d\nevent: delete\ndata: {"key": "a2", "revision": %d}\n\n'
            % (r1, r1, r1 + 2, r1 + 2, r1 + 3, r1 + 3, rt, rt, rt, rt)).encode()
        deadline = time.monotonic() + 10
        while len(w.raw.replace(b": keep-alive\n\n", b"")) < len(expect) and time.monotonic() < deadline:
            w._fill()
        self.assertEqual(w.raw.replace(b": keep-alive\n\n", b""), expect)
        self.assertLess(r0, r1)

    def test_bad_parameters(self):
        cases = [
            ("?prefix=a&key=b", {}, b"key and prefix cannot both be given\n"),
            ("?prefix=a%20b", {}, b"invalid prefix\n"),
            ("?prefix=%zz", {}, b"invalid prefix\n"),
            ("?key=", {}, b"key cannot be empty\n"),
            ("?key=a/b", {}, b"invalid key\n"),
            ("?from=x", {}, b"invalid from\n"),
            ("?from=-1", {}, b"invalid from\n"),
            ("?from=", {}, b"invalid from\n"),
            ("?from=99999999999999999999999", {}, b"invalid from\n"),
            ("", {"Last-Event-ID": "abc"}, b"invalid Last-Event-ID\n"),
            ("", {"Last-Event-ID": "18446744073709551615"}, b"invalid Last-Event-ID\n"),
        ]
        for q, h, body in cases:
            r = self.node.request("GET", "/watch" + q, headers=h)
            self.assertEqual((r.status, r.body), (400, body), q)
            self.assertEqual(r.header("Content-Type"), kvdtest.TEXT)
        for m in ("PUT", "POST", "DELETE"):
            r = self.node.request(m, "/watch", b"x")
            self.assertEqual((r.status, r.header("Allow")), (405, "GET"), m)
        self.assertEqual(self.node.request("GET", "/kv/ok").status, 404)  # still serving

    def test_start_default_from_and_last_event_id(self):
        revs = [self.put("k%d" % i, "v%d" % i) for i in range(5)]
        # Default: the next revision; nothing before it.
        w = self.watch("?prefix=k").read_head()
        r5 = self.put("k5", "v5")
        self.assertEqual(w.events(1), [(r5, "put", {"key": "k5", "value": "v5", "revision": r5})])
        # from=R replays from R, then live.
        w2 = self.watch("?prefix=k&from=%d" % revs[2]).read_head()
        got = w2.events(4)
        self.assertEqual([e[0] for e in got], revs[2:] + [r5])
        # Last-Event-ID: N resumes at N + 1 and wins over from.
        w3 = self.watch("?prefix=k&from=1", {"Last-Event-ID": str(revs[3])}).read_head()
        self.assertEqual([e[0] for e in w3.events(2)], [revs[4], r5])
        # key=K: that key only.
        w4 = self.watch("?key=k1&from=1").read_head()
        self.assertEqual(w4.events(1)[0][2], {"key": "k1", "value": "v1", "revision": revs[1]})
        r6 = self.put("k10", "x")
        r7 = self.put("k1", "again")
        self.assertEqual(w4.events(1)[0][0], r7)
        self.assertEqual(w.events(2)[1][0], r7)
        self.assertLess(r6, r7)
        # A start in the future waits for it.
        w5 = self.watch("?from=%d" % (r7 + 2)).read_head()
        self.put("f1", "1")
        r9 = self.put("f2", "2")
        self.assertEqual(w5.events(1)[0][0], r9)

    def test_keep_alive(self):
        w = self.watch("?prefix=zz").read_head()
        self.assertEqual(w.next_block(timeout=5), ": keep-alive")

    def test_concurrent_writers_order(self):
        watchers = {("", None): self.watch("").read_head(),
                    ("p1", None): self.watch("?prefix=p1").read_head(),
                    ("", "p2x3"): self.watch("?key=p2x3").read_head()}
        start = self.put("start", "s")

        def writer(t):
            c = kvdtest.RawConn(self.node.port)
            for i in range(40):
                k = "p%dx%d" % (t, i % 7)
                if i % 9 == 8:
                    r = c.request("DELETE", "/kv/" + k)
                else:
                    r = c.request("PUT", "/kv/" + k, "v%d-%d" % (t, i))
                assert r.status == 200, r
            c.close()

        ts = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(self.node.request("DELETE", "/clear").status, 200)
        end = self.put("p1end", "e")
        changes = [c for c in log_changes(self.node.port) if c[0] >= start]
        self.assertEqual(changes[-1][0], end)
        for (prefix, key), w in watchers.items():
            want = matching(changes, prefix, key)
            got = as_changes(w.events(len(want)))
            self.assertEqual(got, want, (prefix, key))

    def test_many_watchers(self):
        n = 2000
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < n + 200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * n + 1000), hard))
        self.node.stop()
        self.node.start()  # inherits the raised limit
        ws = []
        for i in range(n):
            ws.append(Watch(self.node.port, "?prefix=w" if i % 2 == 0 else "?key=k%d" % i))
        try:
            for w in ws:
                w.read_head()
                self.assertEqual(w.status, 200)
            r1 = self.put("w1", "x")
            r2 = self.put("k7", "y")
            for i, w in enumerate(ws):
                if i % 2 == 0:
                    self.assertEqual(w.next_event()[0], r1, i)
            self.assertEqual(ws[7].next_event()[0], r2)
            # k9: nothing for it but keep-alives (every 300 ms here).
            for _ in range(2):
                self.assertEqual(ws[9].next_block(timeout=5), ": keep-alive")
            m = self.node.request("GET", "/health")
            self.assertEqual(m.status, 200)
        finally:
            for w in ws:
                w.close()

    def test_slow_watcher_cut_at_8_mib(self):
        w = self.watch("?prefix=big", rcvbuf=4096).read_head()
        live = self.watch("?prefix=big").read_head()
        value = "v" * 65536
        n = 200  # 12.5 MiB of events: past the 8 MiB cap plus socket buffers
        got = []
        reader = threading.Thread(target=lambda: got.extend(live.next_event(30)[0] for _ in range(n)))
        reader.start()
        revs = [self.put("big%d" % i, value) for i in range(n)]
        # The reader keeps up and sees every event.
        reader.join(60)
        self.assertEqual(got, revs)
        # The one that never read: its stream ends after whole events, early.
        w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        ids = []
        while True:
            e = w.next_event(timeout=20)
            if e is None:
                break
            ids.append(e[0])
        self.assertTrue(w.eof)
        self.assertGreater(len(ids), 0)
        self.assertLess(len(ids), n)
        self.assertEqual(ids, revs[:len(ids)])
        # It resumes with Last-Event-ID from where it was cut.
        w2 = self.watch("?prefix=big", {"Last-Event-ID": str(ids[-1])}).read_head()
        self.assertEqual([w2.next_event()[0] for _ in range(n - len(ids))], revs[len(ids):])

    def test_slow_watchers_cut_at_the_node_budget(self):
        """24 watchers that never read, 7 MiB of events each: none passes
        8 MiB, but together they pass the node's 64 MiB output budget, so
        they are cut past 1 MiB each (and the node keeps serving)."""
        ws = [self.watch("?prefix=nb", rcvbuf=4096).read_head() for _ in range(24)]
        value = "v" * 65536
        n = 112
        revs = [self.put("nb%d" % i, value) for i in range(n)]
        self.assertEqual(self.node.request("GET", "/health").status, 200)
        for w in ws:
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            ids = []
            while True:
                e = w.next_event(timeout=5)
                if e is None:
                    break
                ids.append(e[0])
            self.assertTrue(w.eof)
            self.assertLess(len(ids), n)
            self.assertEqual(ids, revs[:len(ids)])

    def test_shutdown_ends_stream_and_ring_survives_clean_restart(self):
        r1 = self.put("a", "1")
        w = self.watch("?prefix=a").read_head()
        r2 = self.put("a", "2")
        self.assertEqual(w.events(1)[0][0], r2)
        self.assertEqual(self.node.stop(), 0)
        self.assertIsNone(w.next_event(timeout=10))  # clean end of stream
        self.node.start()
        w2 = self.watch("?prefix=a&from=%d" % r1).read_head()
        self.assertEqual(w2.status, 200)
        self.assertEqual([e[0] for e in w2.events(2)], [r1, r2])


class Crash(KvdTestCase):
    """After SIGKILL no saved ring exists: the start rebuilds it from the
    log, the trailing entries behind the latest snapshot included
    (engine_entry_changes() with the outcomes recorded at apply), so 410 is
    only for revisions no longer in the log."""

    def setUp(self):
        super().setUp()
        self.node = self.start_node(args=["--snapshot-threshold", "100"])

    def req(self, method, path, body=None, headers=None, want=200):
        r = self.node.request(method, path, body, headers)
        self.assertEqual(r.status, want, r)
        return r

    def rev(self, r):
        return int(r.header("ETag").strip('"'))

    def watch(self, query="", headers=None):
        w = Watch(self.node.port, query, headers)
        self.addCleanup(w.close)
        return w.read_head()

    def test_replay_after_crash_covers_the_log_after_the_snapshot(self):
        live = self.watch()
        self.assertEqual(live.status, 200)
        r1 = self.rev(self.req("PUT", "/kv/a", "1"))
        self.req("PUT", "/kv/b", "2")
        snap = json.loads(self.req("POST", "/log/snapshot").body)["last-included-index"]
        self.assertGreaterEqual(snap, r1)
        # the log after the snapshot: every kind of entry
        self.req("PUT", "/kv/a", "no", {"If-Match": '"%d"' % (r1 + 100)}, want=412)
        ra = self.rev(self.req("PUT", "/kv/a", "3", {"If-Match": '"%d"' % r1}))
        self.req("PUT", "/kv/a", "no", {"If-None-Match": "*"}, want=412)
        rc = self.rev(self.req("PUT", "/kv/c", "new", {"If-None-Match": "*"}))
        ok = json.loads(self.req("POST", "/txn", json.dumps({
            "compare": [{"key": "a", "revision": ra}],
            "success": [{"op": "put", "key": "t1", "value": "s"}, {"op": "get", "key": "a"},
                        {"op": "delete", "key": "b"}],
            "failure": [{"op": "put", "key": "f", "value": "n"}]})).body)
        self.assertTrue(ok["succeeded"])
        bad = json.loads(self.req("POST", "/txn", json.dumps({
            "compare": [{"key": "a", "revision": r1}],
            "success": [{"op": "put", "key": "t2", "value": "s"}],
            "failure": [{"op": "put", "key": "f", "value": "n"},
                        {"op": "delete", "key": "zz"}]})).body)
        self.assertFalse(bad["succeeded"])
        self.req("DELETE", "/kv/c", headers={"If-Match": '"%d"' % (rc + 100)}, want=412)
        self.req("DELETE", "/kv/c", headers={"If-Match": '"%d"' % rc})
        self.req("DELETE", "/kv/t1")
        self.req("DELETE", "/clear")
        last = self.rev(self.req("PUT", "/kv/z", "after clear"))
        seen = []
        while not seen or seen[-1][0] < last:
            seen.append(live.next_event())
        after = [e for e in seen if e[0] > snap]
        kinds = [(e[1], e[2].get("key")) for e in after]
        self.assertEqual(kinds, [("put", "a"), ("put", "c"), ("put", "t1"), ("delete", "b"),
                                 ("put", "f"), ("delete", "zz"), ("delete", "c"),
                                 ("delete", "t1"), ("clear", None), ("put", "z")])

        self.node.kill()
        self.node.start()
        w = self.watch("?from=%d" % (snap + 1))
        self.assertEqual(w.status, 200, w.body)
        self.assertEqual(w.events(len(after)), after)
        w2 = self.watch(headers={"Last-Event-ID": str(snap)})
        self.assertEqual(w2.status, 200, w2.body)
        self.assertEqual(w2.events(len(after)), after)
        mid = after[3][0]
        w3 = self.watch("?prefix=t&from=%d" % mid)
        self.assertEqual(w3.events(2), [e for e in after if e[0] >= mid and
                                        (e[1] == "clear" or e[2]["key"].startswith("t"))][:2])
        # the trailing entries kept behind the snapshot replay too (the
        # 410 floor after a crash is CrashFloor's)
        w5 = self.watch("?from=%d" % r1)
        self.assertEqual(w5.status, 200, w5.body)
        self.assertEqual(w5.next_event()[:2], (r1, "put"))
        # and the stream goes on live after the replay
        r4 = self.rev(self.req("PUT", "/kv/y", "4"))
        self.assertEqual(w.next_event()[0], r4)
        self.assertEqual(w2.next_event()[0], r4)


class CrashFloor(KvdTestCase):
    """The 410 floor is the same before and after a crash: a watch reaches
    back over the trailing entries kept behind the snapshot (1,024), also
    when they hold conditional writes and transactions, whose outcomes are
    kept as long as the log keeps the entries."""

    def test_same_floor_and_events_before_and_after_a_crash(self):
        node = self.start_node(args=["--snapshot-threshold", "100"])
        c = kvdtest.RawConn(node.port)
        self.addCleanup(c.close)
        rev = {}
        for i in range(1400):
            k = "k%d" % (i % 40)
            if i % 3 == 0 and k in rev:
                r = c.request("PUT", "/kv/" + k, "c%d" % i, {"If-Match": '"%d"' % rev[k]})
            elif i % 7 == 0:
                r = c.request("POST", "/txn", json.dumps({
                    "compare": [{"key": k, "revision": rev.get(k, 0)}],
                    "success": [{"op": "put", "key": k, "value": "t%d" % i}],
                    "failure": [{"op": "put", "key": "f", "value": "x"}]}))
                self.assertEqual(r.status, 200, r)
                rev.pop(k, None)  # the answer has no ETag; the next write is plain
                continue
            else:
                r = c.request("PUT", "/kv/" + k, "v%d" % i)
            self.assertEqual(r.status, 200, r)
            rev[k] = int(r.header("ETag").strip('"'))
        # The threshold's snapshots run in the background; one taken now
        # (it waits for a running one) is the newest before and after the
        # crash, so the floor cannot move between the two reads.
        r = node.request("POST", "/log/snapshot")
        self.assertEqual(r.status, 200, r)
        snap = json.loads(r.body)["last-included-index"]
        r = node.request("GET", "/watch?from=1")
        self.assertEqual(r.status, 410)
        floor = int(r.header("X-Kvd-Compacted-Revision"))
        self.assertEqual(floor, snap - 1024 + 1)
        w = Watch(node.port, "?from=%d" % floor).read_head()
        self.addCleanup(w.close)
        self.assertEqual(w.status, 200, w.body)
        before = w.events(300)
        w.close()

        node.kill()
        node.start()
        r = node.request("GET", "/watch?from=%d" % (floor - 1))
        self.assertEqual(r.status, 410)
        self.assertEqual(int(r.header("X-Kvd-Compacted-Revision")), floor)
        w2 = Watch(node.port, "?from=%d" % floor).read_head()
        self.addCleanup(w2.close)
        self.assertEqual(w2.status, 200, w2.body)
        self.assertEqual(w2.events(300), before)


class SmallRing(KvdTestCase):
    def test_410_below_the_ring_and_replay_from_its_oldest(self):
        """A ring of 20 events: older starts answer 410 naming the oldest
        revision it still holds in full (a transaction's events leave the
        ring together), and a watch from there replays exactly the log."""
        node = self.start_node(env={"KVD_WATCH_RING_EVENTS": "20"})
        first = int(node.put("a0", "x").header("ETag").strip('"'))
        for i in range(1, 25):
            if i % 6 == 0:
                r = node.request("POST", "/txn", json.dumps(
                    {"success": [{"op": "put", "key": "t%d-%d" % (i, j), "value": "v"}
                                 for j in range(3)]}))
            else:
                r = node.put("a%d" % i, "v%d" % i)
            self.assertEqual(r.status, 200, r)
        changes = log_changes(node.port)
        # What the ring must hold: the newest 20 events, whole revisions.
        kept = list(changes)
        base = 0
        while len(kept) > 20:
            rev = kept[0][0]
            while kept and kept[0][0] == rev:
                kept.pop(0)
            base = rev
        r = node.request("GET", "/watch?from=%d" % first)
        self.assertEqual((r.status, r.body), (410, b"revision compacted\n"))
        self.assertEqual(int(r.header("X-Kvd-Compacted-Revision")), base + 1)
        self.assertEqual(node.request("GET", "/watch?from=%d" % base).status, 410)
        w = Watch(node.port, "?from=%d" % (base + 1)).read_head()
        self.addCleanup(w.close)
        self.assertEqual(w.status, 200)
        self.assertEqual(as_changes(w.events(len(kept))), kept)
        self.assertTrue(any(c[2].startswith("t") for c in kept))  # a txn is in it


    def test_ring_across_text_blocks(self):
        """Event texts are kept in 1 MiB blocks, dropped whole as the ring is
        trimmed and reused: 6,000 PUTs of 1 KB distinct values through a ring
        of 3,000 events fill and drop several blocks; a live watcher sees all
        6,000 and a watch from the ring's oldest revision replays exactly the
        newest 3,000 of the log."""
        node = self.start_node(env={"KVD_WATCH_RING_EVENTS": "3000"},
                               args=["--snapshot-threshold", "100000"])
        live = Watch(node.port, "?prefix=b").read_head()
        self.addCleanup(live.close)
        self.assertEqual(live.status, 200)

        def writer(t):
            with kvdtest.RawConn(node.port) as c:
                for i in range(1500):
                    r = c.request("PUT", "/kv/b%d-%d" % (t, i), "v%d-%05d-%s" % (t, i, "x" * 1000))
                    assert r.status == 200, r

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        changes = log_changes(node.port)
        self.assertEqual(len(changes), 6000)
        self.assertEqual(as_changes(live.events(6000, timeout=30)), changes)
        base = changes[-3001][0]
        kept = changes[-3000:]
        r = node.request("GET", "/watch?from=%d" % base)
        self.assertEqual(r.status, 410)
        self.assertEqual(int(r.header("X-Kvd-Compacted-Revision")), kept[0][0])
        w = Watch(node.port, "?from=%d" % kept[0][0]).read_head()
        self.addCleanup(w.close)
        self.assertEqual(w.status, 200)
        self.assertEqual(as_changes(w.events(3000, timeout=30)), kept)


class Compaction(KvdTestCase):
    def test_410_after_compaction(self):
        node = self.start_node(args=["--snapshot-threshold", "50"])
        first = None

        def writer(t):
            c = kvdtest.RawConn(node.port)
            for i in range(200):
                r = c.request("PUT", "/kv/c%d-%d" % (t, i), "v")
                assert r.status == 200, r
            c.close()

        r = node.request("PUT", "/kv/first", "1")
        first = int(r.header("ETag").strip('"'))
        ts = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        r = node.request("GET", "/log")
        first_kept = json.loads(r.body)["first-index"]
        self.assertGreater(first_kept, 1024)  # snapshots were taken
        r = node.request("GET", "/watch?from=%d" % first)
        self.assertEqual((r.status, r.body), (410, b"revision compacted\n"))
        oldest = int(r.header("X-Kvd-Compacted-Revision"))
        self.assertGreater(oldest, first)
        self.assertLessEqual(oldest, first_kept)
        w = Watch(node.port, "?prefix=c0-&from=%d" % oldest).read_head()
        self.addCleanup(w.close)
        self.assertEqual(w.status, 200)
        e = w.next_event()
        self.assertGreaterEqual(e[0], oldest)


class ThreeNodes(cluster.ClusterCase):
    def stop(self, node):
        node.proc.send_signal(signal.SIGTERM)
        node.proc.wait(timeout=20)
        node.proc = None

    def put(self, leader, key, value):
        r = leader.request("PUT", "/kv/" + key, value)
        self.assertEqual(r.status, 200, r)
        return int(r.headers["etag"].strip('"'))

    def test_resume_across_follower_restart(self):
        c = self.make_cluster(n=3)
        leader, _ = c.wait_leader()
        f = [n for n in c.nodes if n is not leader][0]
        start = self.put(leader, "r0", "x")
        w = Watch(f.port, "?prefix=r&from=%d" % start).read_head()
        self.addCleanup(w.close)
        for i in range(1, 10):
            self.put(leader, "r%d" % i, "v%d" % i)
        got = w.events(10)
        self.stop(f)
        self.assertIsNone(w.next_event())
        for i in range(10, 20):
            self.put(leader, "r%d" % i, "v%d" % i)
            self.put(leader, "other%d" % i, "o")
        f.start()
        f.wait_ready()
        w2 = Watch(f.port, "?prefix=r", {"Last-Event-ID": str(got[-1][0])}).read_head()
        self.addCleanup(w2.close)
        self.assertEqual(w2.status, 200, w2.body)
        got += w2.events(10)
        end = self.put(leader, "r-end", "e")
        got += w2.events(1)
        want = matching([x for x in log_changes(leader.port) if start <= x[0] <= end], "r")
        self.assertEqual(as_changes(got), want)

    def test_resume_across_follower_crash(self):
        """SIGKILL (no saved ring): the restarted follower rebuilds its ring
        from its log, and a resume with Last-Event-ID gets every event once."""
        c = self.make_cluster(n=3)
        leader, _ = c.wait_leader()
        f = [n for n in c.nodes if n is not leader][0]
        start = self.put(leader, "r0", "x")
        w = Watch(f.port, "?prefix=r&from=%d" % start).read_head()
        self.addCleanup(w.close)
        for i in range(1, 10):
            self.put(leader, "r%d" % i, "v%d" % i)
        got = w.events(10)
        f.kill()
        self.assertIsNone(w.next_event())
        for i in range(10, 20):
            self.put(leader, "r%d" % i, "v%d" % i)
            self.put(leader, "other%d" % i, "o")
        f.start()
        f.wait_ready()
        w2 = Watch(f.port, "?prefix=r", {"Last-Event-ID": str(got[5][0])}).read_head()
        self.addCleanup(w2.close)
        self.assertEqual(w2.status, 200, w2.body)
        got = got[:6] + w2.events(14)
        end = self.put(leader, "r-end", "e")
        got += w2.events(1)
        want = matching([x for x in log_changes(leader.port) if start <= x[0] <= end], "r")
        self.assertEqual(as_changes(got), want)

    def test_resume_across_leader_change(self):
        c = self.make_cluster(n=3)
        leader, _ = c.wait_leader()
        start = self.put(leader, "l0", "x")
        w = Watch(leader.port, "?prefix=l&from=%d" % start).read_head()
        self.addCleanup(w.close)
        for i in range(1, 8):
            self.put(leader, "l%d" % i, "v%d" % i)
        got = w.events(8)
        self.stop(leader)
        self.assertIsNone(w.next_event())
        rest = [n for n in c.nodes if n is not leader]
        new_leader, _ = c.wait_leader(nodes=rest)
        for i in range(8, 16):
            self.put(new_leader, "l%d" % i, "v%d" % i)
        other = [n for n in rest if n is not new_leader][0]
        w2 = Watch(other.port, "?prefix=l", {"Last-Event-ID": str(got[-1][0])}).read_head()
        self.addCleanup(w2.close)
        self.assertEqual(w2.status, 200, w2.body)
        got += w2.events(8)
        want = matching([x for x in log_changes(new_leader.port) if x[0] >= start], "l")
        self.assertEqual(as_changes(got), want)

    def test_snapshot_install_ends_the_watch(self):
        """A follower that catches up by a snapshot jumps over revisions it
        never applied one by one: its watches end (they cannot go on
        exactly) and a resume from before the jump answers 410."""
        c = self.make_cluster(n=3, args=["--snapshot-threshold", "50"])
        leader, _ = c.wait_leader()
        f = [n for n in c.nodes if n is not leader][0]
        rest = [n for n in c.nodes if n is not f]
        start = self.put(leader, "s0", "x")
        c.wait_applied()
        w = Watch(f.port, "?prefix=s&from=%d" % start).read_head()
        self.addCleanup(w.close)
        self.assertEqual(w.events(1)[0][0], start)
        c.partition(rest, [f])

        def writer(t):
            cl = cluster.Client()
            for i in range(250):
                r = cl.request(leader.host, leader.port, "PUT", "/kv/s%d-%d" % (t, i), "v")
                assert r.status == 200, r
            cl.close()

        ts = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        c.heal()
        c.wait_applied(timeout=60)
        self.assertIn("installed", f.log_tail(400))  # it did catch up by a snapshot
        self.assertIsNone(w.next_event(timeout=20))  # the stream ended, skipping nothing
        r = f.request("GET", "/watch?prefix=s", headers={"Last-Event-ID": str(start)})
        self.assertEqual(r.status, 410, r)


if __name__ == "__main__":
    unittest.main()
