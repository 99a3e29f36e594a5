"""test_binary_rpc.py: the binary AppendEntries body (Content-Type
application/x-kvd-raft, docs/formats.md) from a hostile client.

The binary form gets the checks of the JSON form (API.md §7): terms and
indexes below 2^63, a valid leader id, entries contiguous after
prev-log-index, plus its framing's: magic, version, record checksums, exact
length. Anything else is 400 with a one-line reason and leaves the node's
state untouched; a well-formed body in a stale term is answered 200 like its
JSON twin; JSON stays accepted on the same path. A peer that does not know
the binary form (another implementation: it answers 415) is sent JSON from
then on, and writes still commit through it.

Nodes use ports 24000-24999 (shared with test_hostile_rpc.py, whose helpers
this file reuses). Standard library only; real kvd processes.
"""

import http.server
import json
import struct
import threading
import unittest

import os

import cluster
from cluster import wait_until
from test_hostile_rpc import HostileRpcCase, append_body, my_ports

CT = {"Content-Type": "application/x-kvd-raft"}


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


TABLE = _crc_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def record(index, term, typ, payload=b"", tag=0, crc=None):
    head = struct.pack("<I", len(payload))
    rest = struct.pack("<QQII", index, term, typ, tag) + payload
    if crc is None:
        crc = crc32c(rest, crc32c(head))
    return head + struct.pack("<I", crc) + rest


def body(term=1, lid=b":1", pli=0, plt=0, commit=0, seq=1, records=(), n=None,
         magic=b"KVDA", version=1, idlen=None):
    recs = b"".join(records)
    return (magic + struct.pack("<IQQQQQII", version, term, pli, plt, commit, seq,
                                len(records) if n is None else n,
                                len(lid) if idlen is None else idlen) + lid + recs)


class TestBinaryAppendEntries(HostileRpcCase):
    def post_bin(self, node, b):
        return node.request("POST", "/raft/append-entries", b, timeout=5,
                            headers=dict(self.auth, **CT))

    def assertRefusedBin(self, node, b, term, what):
        before = node.info()
        r = self.post_bin(node, b)
        self.assertEqual(r.status, 400, "%s: %r" % (what, r))
        text = r.body.decode("latin-1")
        self.assertTrue(text.endswith("\n") and "\n" not in text[:-1] and len(text) > 1,
                        "%s: reason %r" % (what, text))
        after = node.info()
        for f in ("term", "voted-for", "leader", "role", "peers", "commit-index"):
            if f in before:
                self.assertEqual(after.get(f), before[f], "%s changed %s" % (what, f))

    def test_malformed_binary_bodies_are_400_and_change_nothing(self):
        c, node = self.one_node()
        self.assertEqual(node.request("PUT", "/kv/before", "kept").status, 200)
        term = node.info()["term"]
        t = term + 5  # a valid body in this term would depose the leader
        big = 1 << 63
        good = [record(1, t, 2), record(2, t, 1, b"PUT k v")]
        cases = {
            "empty": b"",
            "json under the binary type": append_body(term=t, lid='":1"').encode(),
            "bad magic": body(term=t, magic=b"KVDX"),
            "bad version": body(term=t, version=2),
            "term 2^63": body(term=big),
            "prev-log-index 2^63": body(term=t, pli=big),
            "prev-log-term 2^64-1": body(term=t, plt=(1 << 64) - 1),
            "leader-commit 2^63": body(term=t, commit=big),
            "seq 2^63": body(term=t, seq=big),
            "empty id": body(term=t, lid=b""),
            "id with CRLF": body(term=t, lid=b"a\r\nX-Inj: 1\r\nb:1"),
            "id without port": body(term=t, lid=b"nohost"),
            "id longer than the body": body(term=t, idlen=1000),
            "count above records": body(term=t, records=good, n=3),
            "count below records": body(term=t, records=good, n=1),
            "trailing byte": body(term=t, records=good) + b"\0",
            "bad checksum": body(term=t, records=[record(1, t, 2, crc=1)]),
            "gap": body(term=t, records=[record(2, t, 2)]),
            "entry term 2^63": body(term=t, records=[record(1, big, 2)]),
            "unknown type": body(term=t, records=[record(1, t, 9)]),
            "seal record": body(term=t, records=[record(1, t, 0x100, b"\0" * 8)]),
            "batch tag": body(term=t, records=[record(1, t, 2, tag=3)]),
            "no-op with data": body(term=t, records=[record(1, t, 2, b"x")]),
            "command not UTF-8": body(term=t, records=[record(1, t, 1, b"PUT k \xff")]),
            "bad configuration": body(term=t, records=[record(1, t, 3, b"\x09junk")]),
        }
        whole = body(term=t, records=good)
        for cut in (1, 55, 60, len(whole) - 1):
            cases["truncated at %d" % cut] = whole[:cut]
        for what, b in cases.items():
            self.assertRefusedBin(node, b, term, what)
        self.assertHealthy(c, node, term, {"before": b"kept"})

    def test_stale_binary_append_is_answered_like_json(self):
        c, node = self.one_node(token=True)
        self.assertEqual(node.request("PUT", "/kv/before", "kept").status, 200)
        term = node.info()["term"]
        r = self.post_bin(node, body(term=0, lid=b":1", records=[record(1, 0, 2)]))
        self.assertEqual(r.status, 200, r)
        res = json.loads(r.body)
        self.assertEqual((res["term"], res["success"]), (term, False))
        r = node.request("POST", "/raft/append-entries", append_body(term=0, lid='":1"').encode(),
                         timeout=5, headers=dict(self.auth))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body)["success"], False)
        self.assertHealthy(c, node, term, {"before": b"kept"})


class JsonOnlyPeer(http.server.BaseHTTPRequestHandler):
    """A Raft peer of another implementation: grants every vote, refuses
    binary append-entries with 415 and follows the leader's log over JSON
    (it only counts entries)."""
    protocol_version = "HTTP/1.1"
    state = None  # {"last": int, "binary": int, "json": int, "lock": Lock, "refuse": int}

    def log_message(self, *args):
        pass

    def reply(self, status, obj):
        body = (json.dumps(obj) if obj is not None else "unsupported\n").encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        st = self.state
        if self.path.startswith("/raft/append-entries"):
            if "x-kvd-raft" in (self.headers.get("Content-Type") or ""):
                with st["lock"]:
                    st["binary"] += 1
                return self.reply(st["refuse"], None)
            req = json.loads(raw)
            with st["lock"]:
                st["json"] += 1
                prev = req["prev-log-index"]
                if prev > st["last"]:
                    res = {"term": req["term"], "success": False, "last-log-index": st["last"]}
                else:
                    st["last"] = prev + len(req.get("entries", []))
                    res = {"term": req["term"], "success": True, "last-log-index": st["last"]}
                res["seq"] = req.get("seq", 0)
            return self.reply(200, res)
        if self.path.startswith("/raft/request-vote"):
            req = json.loads(raw)
            return self.reply(200, {"term": req["term"], "vote-granted": True,
                                    "pre-vote": req.get("pre-vote", False)})
        req = json.loads(raw) if raw[:1] == b"{" else {"term": 0}
        return self.reply(200, {"term": req.get("term", 0)})


class TestJsonFallback(HostileRpcCase):
    def test_peer_refusing_binary_is_sent_json_and_writes_commit(self):
        self._fallback(415)

    def test_peer_failing_on_binary_with_500_is_sent_json(self):
        self._fallback(500)

    def _fallback(self, refuse):
        kport, fport = my_ports(2)
        state = {"last": 0, "binary": 0, "json": 0, "lock": threading.Lock(), "refuse": refuse}
        handler = type("Peer", (JsonOnlyPeer,), {"state": state})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", fport), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        node = cluster.Node(":%d" % kport, "127.0.0.1", kport, os.path.join(self.tmpdir, "k"),
                            os.path.join(self.tmpdir, "k.log"),
                            args=["--port", str(kport), "--working-dir",
                                  os.path.join(self.tmpdir, "k"),
                                  "--peers", ":%d,:%d" % (kport, fport)])
        self.addCleanup(node.kill)
        node.start()
        wait_until(lambda: (node.try_info() or {}).get("role") == "leader", 15,
                   what="kvd leader with the JSON-only peer's vote")
        for i in range(20):
            r = node.request("PUT", "/kv/k%d" % i, "v%d" % i, timeout=10)
            self.assertEqual(r.status, 200, r)  # committed: the peer acknowledged it
        self.assertGreaterEqual(state["binary"], 1)  # tried binary first
        self.assertGreater(state["json"], 0)
        # After the switch only JSON goes to this peer: no new binary request.
        before = state["binary"]
        for i in range(5):
            self.assertEqual(node.request("PUT", "/kv/z%d" % i, "v", timeout=10).status, 200)
        self.assertEqual(state["binary"], before)
        self.assertEqual(node.get("/kv/k7").body, b"v7")


if __name__ == "__main__":
    unittest.main()
