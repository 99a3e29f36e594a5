"""HTTP/1.1 behaviour of one node (API.md §2): keep-alive, pipelining, chunked
request bodies, malformed requests, oversized headers, and a burst of 10,000
simultaneous connections followed by a crash and a restart."""

import errno
import os
import resource
import selectors
import socket
import time
import unittest

from kvdtest import TEXT, KvdTestCase, build_request

SOMAXCONN = "/proc/sys/net/core/somaxconn"
BURST = 10000


class HttpTest(KvdTestCase):
    def setUp(self):
        super().setUp()
        self.node = self.start_node()

    def test_keep_alive_many_requests_on_one_socket(self):
        with self.node.conn() as c:
            for i in range(200):
                r = c.request("PUT", "/kv/ka%d" % i, "value %d" % i)
                self.assertText(r, 200, b"")
                self.assertNotEqual((r.header("Connection") or "").lower(), "close", r)
                r = c.request("GET", "/kv/ka%d" % i)
                self.assertText(r, 200, ("value %d" % i).encode())
            self.assertText(c.request("GET", "/health"), 200, "ok\n")

    def test_pipelined_responses_come_in_request_order(self):
        n = self.node
        with n.conn() as c:
            for i in range(30):
                self.assertText(c.request("PUT", "/kv/o%d" % i, "ov%d" % (i * 37)), 200, b"")
        reqs, expect = [], []
        for i in range(30):
            reqs.append(build_request("GET", "/kv/o%d" % i))
            expect.append((200, b"ov%d" % (i * 37)))
            if i % 3 == 0:
                reqs.append(build_request("GET", "/kv/missing%d" % i))
                expect.append((404, b"key not found\n"))
            if i % 5 == 0:
                reqs.append(build_request("GET", "/health"))
                expect.append((200, b"ok\n"))
                reqs.append(build_request("POST", "/kv/o%d" % i, "x"))
                expect.append((405, b"method not allowed\n"))
        with n.conn() as c:
            c.send(b"".join(reqs))
            for i, (status, body) in enumerate(expect):
                r = c.read_response()
                self.assertEqual((r.status, r.body), (status, body), "response %d: %r" % (i, r))

    def test_pipelined_reads_see_preceding_pipelined_writes(self):
        reqs = []
        expect = []
        for i in range(40):
            reqs.append(build_request("PUT", "/kv/p%d" % i, "pv%d" % i))
            expect.append((200, b""))
            reqs.append(build_request("GET", "/kv/p%d" % i))
            expect.append((200, b"pv%d" % i))
            if i % 10 == 0:
                reqs.append(build_request("GET", "/kv/absent%d" % i))
                expect.append((404, b"key not found\n"))
                reqs.append(build_request("DELETE", "/kv/p%d" % i))
                expect.append((200, b""))
                reqs.append(build_request("GET", "/kv/p%d" % i))
                expect.append((404, b"key not found\n"))
        reqs.append(build_request("GET", "/health"))
        expect.append((200, b"ok\n"))
        with self.node.conn() as c:
            c.send(b"".join(reqs))
            for i, (status, body) in enumerate(expect):
                r = c.read_response()
                self.assertEqual((r.status, r.body), (status, body), "response %d: %r" % (i, r))
                self.assertEqual(r.content_type, TEXT, r)

    def test_pipelined_requests_split_at_odd_boundaries(self):
        data = b"".join(build_request("PUT", "/kv/s%d" % i, "sv%d" % i) for i in range(10))
        with self.node.conn() as c:
            for off in range(0, len(data), 7):
                c.send(data[off:off + 7])
            for i in range(10):
                self.assertText(c.read_response(), 200, b"")
        for i in range(10):
            self.assertValue(self.node, "s%d" % i, "sv%d" % i)

    def test_chunked_request_body_for_put(self):
        value = "hello chunked \U0001F600 world\n".encode("utf-8")
        # chunk boundaries split the emoji's bytes
        chunks = [value[:15], value[15:17], value[17:]]
        body = b"".join(b"%x\r\n%s\r\n" % (len(ch), ch) for ch in chunks) + b"0\r\n\r\n"
        head = b"PUT /kv/chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        with self.node.conn() as c:
            c.send(head)
            c.send(body[:10])
            time.sleep(0.05)
            c.send(body[10:])
            self.assertText(c.read_response(), 200, b"")
            # the connection stays usable
            self.assertText(c.request("GET", "/kv/chunky"), 200, value)

    def test_chunked_request_body_large(self):
        value = b"0123456789abcdef" * 40960  # 655,360 bytes in 4 KiB chunks
        body = b"".join(b"1000\r\n" + value[i:i + 4096] + b"\r\n" for i in range(0, len(value), 4096))
        assert len(value) % 4096 == 0
        body += b"0\r\n\r\n"
        with self.node.conn() as c:
            c.send(b"PUT /kv/bigchunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
            self.assertText(c.read_response(), 200, b"")
        self.assertValue(self.node, "bigchunk", value)

    def test_malformed_http_gets_400_and_connection_closed(self):
        cases = [
            b"GARBAGE\r\n\r\n",
            b"GET /kv/x HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
            b"PUT /kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nv",
            b"PUT /kv/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nv\r\n0\r\n\r\n",
            b"GET /kv/a b c HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x00\x01\x02\x03\r\n\r\n",
        ]
        for raw in cases:
            with self.subTest(request=raw):
                with self.node.conn(timeout=5) as c:
                    c.send(raw)
                    r = c.read_response()
                    self.assertEqual(r.status, 400, r)
                    self.assertEqual(r.content_type, TEXT, r)
                    self.assertTrue(c.closed_by_peer(5.0), "connection left open after 400")
        self.assertText(self.node.request("GET", "/health"), 200, "ok\n")

    def test_malformed_after_good_request_on_same_connection(self):
        with self.node.conn(timeout=5) as c:
            self.assertText(c.request("PUT", "/kv/m", "v"), 200, b"")
            c.send(b"BROKEN REQUEST LINE\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 400, r)
            self.assertTrue(c.closed_by_peer(5.0), "connection left open after 400")
        self.assertValue(self.node, "m", "v")

    def _assert_431(self, raw):
        with self.node.conn(timeout=10) as c:
            try:
                c.send(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer before reading everything
            r = c.read_response()
            self.assertEqual(r.status, 431, r)
            self.assertEqual(r.content_type, TEXT, r)

    def test_oversized_header_value_is_431(self):
        self._assert_431(b"GET /kv/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n")
        self.assertText(self.node.request("GET", "/health"), 200, "ok\n")

    def test_oversized_header_section_is_431(self):
        hdrs = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(1000))
        self._assert_431(b"GET /kv/x HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\n")
        self.assertText(self.node.request("GET", "/health"), 200, "ok\n")

    def test_oversized_request_line_is_431_or_414(self):
        with self.node.conn(timeout=10) as c:
            try:
                c.send(b"GET /kv/" + b"a" * (256 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = c.read_response()
            self.assertIn(r.status, (414, 431), r)
        self.assertText(self.node.request("GET", "/health"), 200, "ok\n")

    def test_connection_close_request_header_closes_after_answer(self):
        with self.node.conn(timeout=5) as c:
            r = c.request("PUT", "/kv/cc", "v", headers={"Connection": "close"})
            self.assertText(r, 200, b"")
            self.assertTrue(c.closed_by_peer(5.0), "connection left open after Connection: close")
        self.assertValue(self.node, "cc", "v")

    def test_http_1_0_request_is_answered(self):
        with self.node.conn(timeout=5) as c:
            c.send(b"PUT /kv/old HTTP/1.0\r\nContent-Length: 3\r\n\r\nold")
            r = c.read_response()
            self.assertText(r, 200, b"")
            self.assertTrue(c.closed_by_peer(5.0), "HTTP/1.0 connection without keep-alive left open")
        with self.node.conn(timeout=5) as c:
            c.send(b"GET /kv/old HTTP/1.0\r\n\r\n")
            self.assertText(c.read_response(), 200, b"old")

    def test_expect_100_continue_put(self):
        # curl sends this for bodies over 1 KiB; an interim 100 is optional.
        value = b"e" * 5000
        with self.node.conn(timeout=5) as c:
            c.send(b"PUT /kv/expect HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                   b"Expect: 100-continue\r\n\r\n" % len(value))
            c.sock.settimeout(1.0)
            try:
                c._fill()
            except OSError:
                pass  # no interim answer: send the body anyway, as curl does
            c.sock.settimeout(5.0)
            if c.buf:
                r = c.read_response()
                self.assertEqual(r.status, 100, r)
            c.send(value)
            self.assertText(c.read_response(), 200, b"")
        self.assertValue(self.node, "expect", value)

    @unittest.skipUnless(os.environ.get("KVD_SOAK"), "takes 60 s; set KVD_SOAK=1")
    def test_idle_connection_closed_after_60s(self):
        with self.node.conn(timeout=5) as c:
            self.assertText(c.request("GET", "/health"), 200, "ok\n")
            self.assertFalse(c.closed_by_peer(50.0), "idle connection closed before 50 s")
            self.assertTrue(c.closed_by_peer(20.0), "idle connection still open after 70 s")

    def test_headers_below_limit_are_fine(self):
        r = self.node.request("PUT", "/kv/h", "v", headers={"X-Pad": "p" * 4000})
        self.assertText(r, 200, b"")


class BurstTest(KvdTestCase):
    """10,000 connections opened at once, each doing one PUT; then SIGKILL and
    restart: every key is there."""

    def setUp(self):
        super().setUp()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = BURST + 2000  # this process; kvd inherits it
        if hard != resource.RLIM_INFINITY and hard < need:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            except (ValueError, OSError):
                self.skipTest("RLIMIT_NOFILE hard limit %d < %d and cannot be raised" % (hard, need))
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        if os.geteuid() == 0:
            try:
                with open(SOMAXCONN) as f:
                    old = f.read().strip()
                if int(old) < 65535:
                    with open(SOMAXCONN, "w") as f:
                        f.write("65535")
                    self.addCleanup(self._restore_somaxconn, old)
            except OSError:
                pass

    @staticmethod
    def _restore_somaxconn(old):
        try:
            with open(SOMAXCONN, "w") as f:
                f.write(old)
        except OSError:
            pass

    def _burst_put(self, port, n, timeout):
        """Opens n non-blocking connections at once, sends one PUT on each,
        reads each answer. Returns {i: status or error string}."""
        sel = selectors.DefaultSelector()
        results = {}
        states = {}
        addr = ("127.0.0.1", port)
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex(addr)
                if err not in (0, errno.EINPROGRESS):
                    results[i] = "connect: %s" % os.strerror(err)
                    s.close()
                    continue
                st = {"i": i, "out": build_request("PUT", "/kv/burst%d" % i, "bv%d" % i), "in": b""}
                states[s] = st
                sel.register(s, selectors.EVENT_WRITE, st)
            deadline = time.monotonic() + timeout
            while states and time.monotonic() < deadline:
                for key, ev in sel.select(timeout=1.0):
                    s, st = key.fileobj, key.data
                    done = None
                    if ev & selectors.EVENT_WRITE:
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            done = "connect: %s" % os.strerror(err)
                        else:
                            try:
                                sent = s.send(st["out"])
                                st["out"] = st["out"][sent:]
                                if not st["out"]:
                                    sel.modify(s, selectors.EVENT_READ, st)
                            except BlockingIOError:
                                pass
                            except OSError as e:
                                done = "send: %s" % e
                    elif ev & selectors.EVENT_READ:
                        try:
                            chunk = s.recv(4096)
                        except BlockingIOError:
                            continue
                        except OSError as e:
                            chunk = None
                            done = "recv: %s" % e
                        if chunk == b"":
                            done = "closed before a full answer: %r" % st["in"]
                        elif chunk:
                            st["in"] += chunk
                            head, sep, body = st["in"].partition(b"\r\n\r\n")
                            if sep:
                                clen = 0
                                for line in head.split(b"\r\n")[1:]:
                                    k, _, v = line.partition(b":")
                                    if k.strip().lower() == b"content-length":
                                        clen = int(v.strip())
                                if len(body) >= clen:
                                    done = int(head.split(b" ", 2)[1])
                    if done is not None:
                        results[st["i"]] = done
                        sel.unregister(s)
                        s.close()
                        del states[s]
            for s, st in states.items():
                results[st["i"]] = "no answer within %.0f s" % timeout
        finally:
            for s in list(states):
                try:
                    sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()
            sel.close()
        return results

    def _read_back(self, node, n):
        batch = 250
        with node.conn(timeout=30) as c:
            for start in range(0, n, batch):
                idx = range(start, min(n, start + batch))
                c.send(b"".join(build_request("GET", "/kv/burst%d" % i) for i in idx))
                for i in idx:
                    r = c.read_response()
                    self.assertEqual((r.status, r.body), (200, b"bv%d" % i), "key burst%d: %r" % (i, r))

    def test_10000_simultaneous_connections_all_served_then_survive_sigkill(self):
        node = self.start_node()
        t0 = time.monotonic()
        results = self._burst_put(node.port, BURST, timeout=100.0)
        took = time.monotonic() - t0
        bad = {i: r for i, r in results.items() if r != 200}
        self.assertEqual(len(results), BURST)
        self.assertEqual(len(bad), 0, "%d of %d connections failed in %.1f s, e.g. %r"
                         % (len(bad), BURST, took, sorted(bad.items())[:10]))
        node.kill()
        node.start()
        self._read_back(node, BURST)


if __name__ == "__main__":
    unittest.main()
