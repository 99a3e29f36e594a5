"""Hostile clients against one kvd node (API.md §7 "Bounded resources").

Each case attacks a real kvd process over raw sockets and checks, during the
attack, that another client is still served (the latency of a normal request
is printed, not asserted), that no acknowledged write is lost, and that the
node's peak resident memory (VmHWM in /proc/<pid>/status) stays bounded.

Nodes listen on ports 23000-23999 (KVD_TEST_PORT_BASE moves the range).
"""

import os
import socket
import subprocess
import sys
import threading
import time
import unittest

from flood import allow_descriptors, close_flood, open_flood
from kvdtest import KVD_BIN, KvdTestCase, Node, RawConn, build_request

PORT_BASE = int(os.environ.get("KVD_TEST_PORT_BASE", "23000"))
MIB = 1024 * 1024
RSS_LIMIT_KB = 512 * 1024
TOKEN = "hostile-secret"
_next_port = [PORT_BASE + (os.getpid() % 100) * 9]


def range_port():
    """A free port in this suite's range."""
    for _ in range(1000):
        p = _next_port[0]
        _next_port[0] = PORT_BASE + ((p - PORT_BASE + 1) % 1000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return p
    raise AssertionError("no free port in %d-%d" % (PORT_BASE, PORT_BASE + 999))


def vm_kb(pid, field):
    """VmHWM / VmRSS of pid in kB (0 if gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def log(msg):
    sys.stderr.write("    [hostile] %s\n" % msg)
    sys.stderr.flush()


class PrlimitNode(Node):
    """A node started under prlimit --nofile=N."""

    nofile = 256

    def command(self):
        return ["prlimit", "--nofile=%d:%d" % (self.nofile, self.nofile)] + super().command()


class HostileHttpTest(KvdTestCase):
    def node(self, args=(), cls=Node):
        n = cls(self.tmp, port=range_port(), name="n%d" % len(self.nodes), args=list(args))
        self.nodes.append(n)
        return n.start()

    def timed_health(self, node, what):
        """A normal request on a fresh connection during an attack: must answer
        200 within 5 s; prints its latency."""
        t0 = time.monotonic()
        r = node.request("GET", "/health", timeout=5.0)
        ms = (time.monotonic() - t0) * 1000
        log("%s: GET /health %d in %.1f ms" % (what, r.status, ms))
        self.assertEqual(r.status, 200)
        return ms

    def hwm(self, node, what):
        kb = vm_kb(node.proc.pid, "VmHWM")
        log("%s: peak RSS %.1f MB" % (what, kb / 1024.0))
        return kb

    # ---- memory: pipelining without reading ----

    def test_pipelined_gets_without_reading_are_bounded(self):
        n = self.node()
        big = ("v" * MIB).encode()
        self.assertEqual(n.request("PUT", "/kv/big", big).status, 200)
        self.assertEqual(n.request("PUT", "/kv/small", "acked").status, 200)
        req = build_request("GET", "/kv/big?consistency=stale", headers={"X-Pad": "p" * 4000})
        s = socket.create_connection(("127.0.0.1", n.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(3.0)
        sent, blocked, overflow = 0, False, False
        try:
            while sent < 4000:
                if vm_kb(n.proc.pid, "VmRSS") > 700 * 1024:
                    overflow = True  # stop before the machine suffers
                    break
                try:
                    s.sendall(req)
                except socket.timeout:
                    blocked = True
                    break
                sent += 1
            log("pipelining: %d requests sent, send blocked: %s" % (sent, blocked))
            self.timed_health(n, "pipelining")
            peak = self.hwm(n, "pipelining")
        finally:
            s.close()
        self.assertFalse(overflow, "RSS passed 700 MB")
        self.assertLess(peak, RSS_LIMIT_KB)
        self.assertTrue(blocked, "the client's send never blocked: the node kept reading")
        self.assertEqual(n.get("small").body, b"acked")
        self.assertEqual(n.get("big").body, big)

    def test_pipelining_on_many_connections_is_bounded(self):
        """One client, 80 connections, each pipelining without reading: the
        per-connection cap alone would allow 80 x 8 MiB; the node-wide cap
        keeps the total bounded."""
        n = self.node()
        big = ("w" * MIB).encode()
        self.assertEqual(n.request("PUT", "/kv/big", big).status, 200)
        req = build_request("GET", "/kv/big?consistency=stale", headers={"X-Pad": "p" * 4000})
        socks, sent = [], []

        def attack():
            s = socket.create_connection(("127.0.0.1", n.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(2.0)
            socks.append(s)
            k = 0
            try:
                while k < 1500 and vm_kb(n.proc.pid, "VmRSS") < 900 * 1024:
                    s.sendall(req)
                    k += 1
            except OSError:
                pass
            sent.append(k)

        ths = [threading.Thread(target=attack) for _ in range(80)]
        try:
            for t in ths:
                t.start()
            for t in ths:
                t.join(60)
            self.timed_health(n, "80 pipelining connections")
            self.assertEqual(n.request("PUT", "/kv/during", "d").status, 200)
            peak = self.hwm(n, "80 pipelining connections")
        finally:
            for s in socks:
                s.close()
        log("80 connections: %d requests sent" % sum(sent))
        self.assertLess(peak, RSS_LIMIT_KB)
        self.assertEqual(n.get("during").body, b"d")

    def test_small_pipelines_on_thousands_of_connections_are_bounded(self):
        """One client, 4,000 connections, each sending 64 KiB of small pipelined
        GETs in one go and never reading. Each answered request waiting for
        its client holds its request object (about ten times its answer's
        bytes), and each paused connection the input it had read. Before both
        were counted (and a connection parsed its whole read in one turn),
        the node passed 700 MB once the client closed its connections, and a
        fresh client waited 2.6 s to more than 5 s for /health during the
        attack."""
        conns = 4000
        allow_descriptors(self, conns)
        n = self.node()
        self.assertEqual(n.request("PUT", "/kv/small", "acked").status, 200)
        socks, sent = open_flood("127.0.0.1", n.port, conns,
                                 b"GET /kv/small HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            log("%d connections: %d MB sent" % (conns, sent // MIB))
            for i in range(3):
                time.sleep(1)
                self.timed_health(n, "%d pipelining connections (%d)" % (conns, i))
            t0 = time.monotonic()
            self.assertEqual(n.request("PUT", "/kv/during", "d").status, 200)
            log("%d pipelining connections: PUT in %.1f ms" % (conns, (time.monotonic() - t0) * 1000))
        finally:
            close_flood(socks)
        # The client goes: every paused connection is let go at once, and
        # what each had kept is parsed and answered before its close is seen.
        for i in range(3):
            time.sleep(1)
            self.timed_health(n, "after the client closed (%d)" % i)
        peak = self.hwm(n, "%d pipelining connections, then closed" % conns)
        self.assertLess(peak, RSS_LIMIT_KB)
        self.assertEqual(n.get("during").body, b"d")
        self.assertEqual(n.get("small").body, b"acked")

    def test_many_unfinished_bodies_are_bounded(self):
        """600 connections each send all but the last byte of a 1 MiB PUT:
        buffered bodies are capped node-wide (503 past it), and the node
        keeps serving; the deadline then ends them."""
        n = self.node()
        self.assertEqual(n.put("k", "acked").status, 200)
        body = b"u" * (MIB - 1)
        socks = []

        def attack(i):
            try:
                s = socket.create_connection(("127.0.0.1", n.port), timeout=10)
                socks.append(s)
                s.sendall(b"PUT /kv/u%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                          % (i, MIB) + body)
            except OSError:
                pass

        ths = [threading.Thread(target=attack, args=(i,)) for i in range(600)]
        try:
            for t in ths:
                t.start()
            for t in ths:
                t.join(60)
            time.sleep(0.5)
            self.timed_health(n, "600 unfinished 1 MiB bodies")
            self.assertEqual(n.put("during", "d").status, 200)
            peak = self.hwm(n, "600 unfinished 1 MiB bodies")
        finally:
            for s in socks:
                s.close()
        self.assertLess(peak, RSS_LIMIT_KB)
        self.assertEqual(n.get("k").body, b"acked")
        self.assertEqual(n.get("during").body, b"d")

    # ---- slow clients: deadlines ----

    def test_one_byte_connections_closed_by_header_deadline(self):
        n = self.node()
        self.assertEqual(n.put("k", "acked").status, 200)
        socks = []
        for _ in range(500):
            s = socket.create_connection(("127.0.0.1", n.port), timeout=5)
            s.sendall(b"G")
            socks.append(s)
        t0 = time.monotonic()
        open_ = list(socks)
        while open_ and time.monotonic() - t0 < 16:
            self.timed_health(n, "one-byte x%d" % len(open_))
            still = []
            for s in open_:
                s.setblocking(False)
                try:
                    d = s.recv(4096)
                    if d == b"" or d.startswith(b"HTTP/1.1 408"):
                        s.close()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    continue
                still.append(s)
            open_ = still
            time.sleep(1.0)
        for s in open_:
            s.close()
        log("one-byte: %d of 500 still open after %.1f s" % (len(open_), time.monotonic() - t0))
        m = n.request("GET", "/metrics").body.decode()
        self.assertIn("kvd_http_requests_timed_out_total 500\n", m)
        self.hwm(n, "one-byte")
        self.assertEqual(len(open_), 0)
        self.assertEqual(n.get("k").body, b"acked")

    # ---- auth from headers ----

    def test_raft_body_without_token_gets_401_before_body(self):
        n = self.node(["--cluster-token", TOKEN])
        self.assertEqual(n.put("k", "acked").status, 200)
        for expect in (True, False):
            with n.conn(timeout=5) as c:
                hdrs = {"Content-Length": str(64 * MIB)}
                if expect:
                    hdrs["Expect"] = "100-continue"
                c.send(build_request("POST", "/raft/append-entries", headers=hdrs))
                r = c.read_response()
                log("64 MiB body without token (expect=%s): %d" % (expect, r.status))
                self.assertEqual(r.status, 401)
                self.assertTrue(c.closed_by_peer())
        # an invalid /raft/ path gets no 64 MiB allowance either
        with n.conn(timeout=5) as c:
            c.send(build_request("POST", "/raft/whatever", headers={
                "Content-Length": str(64 * MIB), "Authorization": "Bearer " + TOKEN}))
            self.assertEqual(c.read_response().status, 413)
        self.hwm(n, "64 MiB body")
        self.assertEqual(n.get("k").body, b"acked")

    def test_trailer_cannot_carry_authorization(self):
        n = self.node(["--cluster-token", TOKEN])
        with n.conn(timeout=5) as c:
            c.send(b"POST /cluster/heal HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"0\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 401, r)
        # the same token in the headers is accepted
        r = n.request("POST", "/cluster/heal", "", headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(r.status, 200, r)

    def test_empty_token_is_a_startup_error(self):
        for args, env in ((["--cluster-token="], {}), ([], {"CLUSTER_TOKEN": ""})):
            env2 = dict(os.environ)
            env2.update(env)
            p = subprocess.run([KVD_BIN, "--port", str(range_port()), "--working-dir",
                                os.path.join(self.tmp, "d")] + args, env=env2,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
            err = p.stderr.decode()
            log("empty token %r %r: exit %d, %r" % (args, env, p.returncode, err.strip()))
            self.assertEqual(p.returncode, 2)
            self.assertEqual(len(err.strip().splitlines()), 1, err)

    def test_token_cluster_still_replicates(self):
        """The node's own RPCs carry the token in their headers: a 3-node
        cluster with a token elects, commits and replicates; a peer-looking
        request without it gets 401 from the headers."""
        ports = [range_port() for _ in range(3)]
        peers = ",".join(":%d" % p for p in ports)
        nodes = []
        for p in ports:
            n = Node(self.tmp, port=p, name="c%d" % p,
                     args=["--peers", peers, "--cluster-token", TOKEN])
            self.nodes.append(n)
            nodes.append(n.start(wait=False))
        for n in nodes:
            n.wait_ready()
        import json

        def leader():
            for n in nodes:
                try:
                    if json.loads(n.request("GET", "/cluster/info", timeout=2).body)["role"] == "leader":
                        return n
                except (OSError, ValueError):
                    pass
            return None
        t0 = time.monotonic()
        ld = None
        while ld is None and time.monotonic() - t0 < 15:
            ld = leader()
            time.sleep(0.1)
        self.assertIsNotNone(ld, "no leader with a cluster token")
        self.assertEqual(ld.put("tk", "tv").status, 200)
        for n in nodes:
            t0 = time.monotonic()
            while n.get("tk", "?consistency=stale").status != 200 and time.monotonic() - t0 < 10:
                time.sleep(0.05)
            self.assertEqual(n.get("tk", "?consistency=stale").body, b"tv")
        r = ld.request("POST", "/raft/request-vote", "{}")
        self.assertEqual(r.status, 401)

    # ---- strict framing ----

    FRAMING = [
        ("CL and TE", b"POST /kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE chunked, identity", b"POST /kv/x HTTP/1.1\r\nHost: x\r\n"
         b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("obs-folded TE", b"POST /kv/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
         b"0\r\n\r\n"),
        ("CL +5", b"PUT /kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
        ("two CL", b"PUT /kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
         b"hello"),
        ("bad CRLF after chunk", b"PUT /kv/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhelloXX0\r\n\r\n"),
        ("CR CR", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\rGET /health HTTP/1.1\r\n\r\n"),
    ]

    def test_framing_matrix_400_and_close(self):
        n = self.node()
        self.assertEqual(n.put("keep", "acked").status, 200)
        clear = b"DELETE /clear HTTP/1.1\r\nHost: x\r\n\r\n"
        for name, raw in self.FRAMING:
            with self.subTest(name):
                self.assertEqual(n.put("keep", "acked").status, 200)
                with n.conn(timeout=5) as c:
                    c.send(raw + clear)
                    got = []
                    try:
                        while True:
                            got.append(c.read_response().status)
                    except (ConnectionError, OSError, ValueError):
                        pass
                log("framing %-22s -> %s" % (name, got))
                self.assertTrue(got and got[-1] == 400 and 200 not in got[1:], got)
                self.assertEqual(n.get("keep").body, b"acked", "DELETE /clear ran after " + name)
        # the server's own 400s reach /metrics through the observe hook
        m = n.request("GET", "/metrics").body.decode()
        line = [l for l in m.splitlines()
                if l.startswith('kvd_http_requests_total{route="other",method="OTHER",status="400"}')]
        self.assertTrue(line and int(line[0].split()[-1]) >= len(self.FRAMING), line)

    # ---- GET /log over large values ----

    def test_parallel_large_log_reads_are_bounded(self):
        n = self.node()
        v = "L" * MIB
        for i in range(40):
            self.assertEqual(n.put("big%d" % i, v).status, 200)
        info0 = n.request("GET", "/cluster/info").body
        results = []

        def reader():
            try:
                with n.conn(timeout=60) as c:
                    r = c.request("GET", "/log?limit=10000")
                    results.append((r.status, len(r.body)))
            except OSError as e:
                results.append((0, str(e)))

        ths = [threading.Thread(target=reader) for _ in range(20)]
        for t in ths:
            t.start()
        self.timed_health(n, "20 x GET /log")
        for t in ths:
            t.join(120)
        peak = self.hwm(n, "20 x GET /log")
        log("GET /log answers: %s" % sorted(set(results))[:5])
        self.assertTrue(all(s == 200 for s, _ in results), results)
        self.assertTrue(all(ln <= 6 * MIB for _, ln in results), results)
        self.assertLess(peak, RSS_LIMIT_KB)
        import json
        t0, t1 = json.loads(info0)["term"], json.loads(n.request("GET", "/cluster/info").body)["term"]
        self.assertEqual(t0, t1)
        self.assertEqual(n.get("big39").body, v.encode())

    # ---- descriptors ----

    def test_connections_past_nofile_keep_node_working(self):
        n = self.node(cls=PrlimitNode)
        self.assertEqual(n.put("k", "acked").status, 200)
        socks = []
        try:
            for _ in range(300):
                socks.append(socket.create_connection(("127.0.0.1", n.port), timeout=5))
            time.sleep(0.5)
            t0 = time.monotonic()
            r = n.request("PUT", "/kv/after", "yes", timeout=5)
            log("nofile=256, 300 conns: PUT %d in %.1f ms" % (r.status, (time.monotonic() - t0) * 1000))
            self.assertEqual(r.status, 200)
            # the node's own files still open: a snapshot and more writes work
            self.assertEqual(n.request("POST", "/log/snapshot", timeout=10).status, 200)
            for i in range(20):
                self.assertEqual(n.put("w%d" % i, "x").status, 200)
        finally:
            for s in socks:
                s.close()
        self.assertEqual(n.get("k").body, b"acked")
        self.assertEqual(n.get("after").body, b"yes")
        # busy connections (a request in progress) cannot be displaced: past
        # the cap new ones are closed at accept, and the descriptors kept
        # back still let the node open its own files (a snapshot, segments)
        with n.conn(timeout=10) as keep:
            self.assertEqual(keep.request("PUT", "/kv/before", "b").status, 200)
            socks = []
            try:
                for _ in range(300):
                    s = socket.create_connection(("127.0.0.1", n.port), timeout=5)
                    try:
                        s.sendall(b"G")
                    except OSError:
                        pass
                    socks.append(s)
                time.sleep(0.5)
                self.assertEqual(keep.request("POST", "/log/snapshot").status, 200)
                for i in range(20):
                    self.assertEqual(keep.request("PUT", "/kv/busy%d" % i, "x").status, 200)
                m = keep.request("GET", "/metrics").body.decode()
                refused = [l for l in m.splitlines()
                           if l.startswith("kvd_http_connections_refused_total ")]
                log("nofile=256, 300 busy conns: %s" % refused)
                self.assertTrue(refused and int(refused[0].split()[1]) > 0, refused)
            finally:
                for s in socks:
                    s.close()
        time.sleep(0.3)
        self.assertEqual(n.put("later", "z").status, 200)
        self.assertEqual(n.get("busy19").body, b"x")
        self.hwm(n, "nofile")

    def test_max_connections_flag(self):
        n = self.node(["--max-connections", "10"])
        socks = [socket.create_connection(("127.0.0.1", n.port), timeout=5) for _ in range(10)]
        try:
            for s in socks[:10]:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # busy: not evictable
            time.sleep(0.3)
            with n.conn(timeout=5) as c:
                self.assertTrue(c.closed_by_peer(), "connection over --max-connections kept open")
        finally:
            for s in socks:
                s.close()
        time.sleep(0.3)  # the node sees the closes before it counts the next one
        self.timed_health(n, "max-connections")

    def test_max_connections_flag_refuses_new_not_idle(self):
        # The operator's cap closes the newcomer at accept, even when the
        # connections holding the slots are idle (API.md §7).
        n = self.node(["--max-connections", "5"])
        socks = [socket.create_connection(("127.0.0.1", n.port), timeout=5) for _ in range(5)]
        try:
            time.sleep(1.5)  # older than any idle-eviction threshold
            with n.conn(timeout=5) as c:
                self.assertTrue(c.closed_by_peer(), "connection over --max-connections kept open")
            for s in socks:  # the idle ones are still served
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200"))
        finally:
            for s in socks:
                s.close()

    # ---- URL, key and limit edge cases ----

    def test_url_key_limit_edge_cases(self):
        n = self.node()
        self.assertEqual(n.put("a", "va").status, 200)
        cases = [
            ("GET", "/kv/%4", 400, b"invalid key\n"),
            ("GET", "/kv/%zz", 400, b"invalid key\n"),
            ("GET", "/kv/%00", 400, b"invalid key\n"),
            ("GET", "/kv/" + "k" * 1024, 404, b"key not found\n"),
            ("GET", "/kv/" + "k" * 1025, 400, b"invalid key\n"),
            ("GET", "/kv/" + "k" * 3073, 400, b"invalid key\n"),
            ("GET", "/log?from=18446744073709551615", 400, None),
            ("GET", "/log?limit=18446744073709551616", 400, None),
            ("GET", "http://127.0.0.1/kv/a", 200, b"va"),
            ("GET", "/kv/a#frag", 200, b"va"),
        ]
        for m, path, status, body in cases:
            with self.subTest(path[:40]):
                r = n.request(m, path)
                self.assertEqual(r.status, status, r)
                if body is not None:
                    self.assertEqual(r.body, body)

    def test_header_count_and_size_limits(self):
        n = self.node()
        def with_headers(k):  # Host plus k - 1 others
            return {"X-H%d" % i: "v" for i in range(k - 1)}
        self.assertEqual(n.request("GET", "/health", headers=with_headers(64)).status, 200)
        r = n.request("GET", "/health", headers=with_headers(65))
        self.assertEqual(r.status, 431)
        # counted: request target + header names + values (Host: 127.0.0.1)
        base = len("/health") + len("Host") + len("127.0.0.1") + len("X-Pad")
        for total, status in ((16384, 200), (16385, 431)):
            r = n.request("GET", "/health", headers={"X-Pad": "p" * (total - base)})
            self.assertEqual(r.status, status, "%d bytes: %r" % (total, r))


if __name__ == "__main__":
    unittest.main()
