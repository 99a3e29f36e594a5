"""Revisions, conditional writes, range listing and transactions over HTTP
(API.md §10-§12), against real kvd processes: a single node for every status
and header, and a 3-node cluster for redirects and stale listings on a
follower.

Ports: this file's nodes listen in 27000-27999 (KVD_REV_PORT_BASE moves the
range), not on the ephemeral ports the helpers pick by default.
"""
import json
import os
import random
import socket
import threading
import time
import unittest

import cluster
import kvdtest
from kvdtest import JSON, KvdTestCase, wait_until

PORT_LO = int(os.environ.get("KVD_REV_PORT_BASE", "27000"))
PORT_HI = PORT_LO + 999


def ports_in_range(n):
    """n distinct ports of [PORT_LO, PORT_HI] that are free right now."""
    rng = random.Random()
    ports = []
    for _ in range(5000):
        if len(ports) == n:
            return ports
        p = rng.randint(PORT_LO, PORT_HI)
        if p in ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        ports.append(p)
    raise RuntimeError("no free ports in %d-%d" % (PORT_LO, PORT_HI))


# The cluster helper picks its own ports: keep them in this file's range.
cluster.free_ports = ports_in_range


def etag_of(r):
    tag = r.header("ETag")
    if tag is None or not (tag.startswith('"') and tag.endswith('"')):
        raise AssertionError("no strong ETag in %r" % (r,))
    return int(tag[1:-1])


class SingleNode(KvdTestCase):
    def setUp(self):
        super().setUp()
        self.node = self.start_node(port=ports_in_range(1)[0])

    def put(self, key, value, headers=None):
        return self.node.request("PUT", "/kv/" + key, value, headers)

    def delete(self, key, headers=None):
        return self.node.request("DELETE", "/kv/" + key, None, headers)

    def list(self, query=""):
        r = self.node.request("GET", "/kv" + query)
        if r.status == 200:
            self.assertEqual(r.content_type, JSON, r)
            return json.loads(r.body.decode("utf-8"))
        return r

    def txn(self, body):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        return self.node.request("POST", "/txn", body)

    # ---- §10 ----------------------------------------------------------------

    def test_etag_on_put_and_get(self):
        r = self.put("a", "1")
        self.assertText(r, 200, b"")
        rev1 = etag_of(r)
        self.assertGreater(rev1, 0)
        r = self.node.get("a")
        self.assertText(r, 200, b"1")
        self.assertEqual(etag_of(r), rev1)
        r = self.put("a", "2")
        rev2 = etag_of(r)
        self.assertGreater(rev2, rev1)
        self.assertEqual(etag_of(self.node.get("a")), rev2)
        self.assertEqual(etag_of(self.node.get("a", "?consistency=stale")), rev2)
        # Another key's write leaves a's revision alone.
        self.assertGreater(etag_of(self.put("b", "x")), rev2)
        self.assertEqual(etag_of(self.node.get("a")), rev2)
        # DELETE answers as before: 200, empty body.
        self.assertText(self.delete("b"), 200, b"")
        self.assertText(self.node.get("missing"), 404, "key not found\n")

    def test_if_match(self):
        rev = etag_of(self.put("k", "v1"))
        r = self.put("k", "v2", {"If-Match": '"%d"' % (rev + 100)})
        self.assertText(r, 412, "precondition failed\n")
        self.assertValue(self.node, "k", "v1")
        r = self.put("k", "v2", {"If-Match": '"%d"' % rev})
        self.assertText(r, 200, b"")
        rev2 = etag_of(r)
        self.assertGreater(rev2, rev)
        # The old revision no longer matches.
        self.assertText(self.put("k", "v3", {"If-Match": '"%d"' % rev}), 412,
                        "precondition failed\n")
        self.assertValue(self.node, "k", "v2")
        # Optional whitespace around the value is accepted.
        self.assertText(self.put("k", "v3", {"If-Match": '  "%d" ' % rev2}), 200, b"")
        self.assertValue(self.node, "k", "v3")
        # A key that does not exist: 412, still absent.
        self.assertText(self.put("nokey", "x", {"If-Match": '"1"'}), 412, "precondition failed\n")
        self.assertText(self.put("nokey", "x", {"If-Match": '"0"'}), 412, "precondition failed\n")
        self.assertText(self.node.get("nokey"), 404, "key not found\n")

    def test_if_none_match(self):
        r = self.put("n", "first", {"If-None-Match": "*"})
        self.assertText(r, 200, b"")
        etag_of(r)
        self.assertText(self.put("n", "second", {"If-None-Match": "*"}), 412,
                        "precondition failed\n")
        self.assertValue(self.node, "n", "first")
        self.assertText(self.delete("n"), 200, b"")
        self.assertText(self.put("n", "third", {"If-None-Match": "*"}), 200, b"")
        self.assertValue(self.node, "n", "third")

    def test_delete_if_match(self):
        rev = etag_of(self.put("d", "v"))
        self.assertText(self.delete("d", {"If-Match": '"%d"' % (rev + 1)}), 412,
                        "precondition failed\n")
        self.assertValue(self.node, "d", "v")
        self.assertText(self.delete("d", {"If-Match": '"%d"' % rev}), 200, b"")
        self.assertText(self.node.get("d"), 404, "key not found\n")
        # Gone: the same revision no longer matches.
        self.assertText(self.delete("d", {"If-Match": '"%d"' % rev}), 412,
                        "precondition failed\n")

    def test_malformed_preconditions(self):
        rev = etag_of(self.put("m", "v"))
        bad_match = ['W/"%d"' % rev, str(rev), '"abc"', '""', '"', "*", '"%d", "%d"' % (rev, rev),
                     '"-1"', '"+%d"' % rev, '"99999999999999999999"', "", '"1 2"']
        for v in bad_match:
            with self.subTest(if_match=v):
                self.assertText(self.put("m", "w", {"If-Match": v}), 400, "invalid precondition\n")
                self.assertText(self.delete("m", {"If-Match": v}), 400, "invalid precondition\n")
        for v in ['"%d"' % rev, "W/*", "", "**", '"*"']:
            with self.subTest(if_none_match=v):
                self.assertText(self.put("m", "w", {"If-None-Match": v}), 400,
                                "invalid precondition\n")
        # If-None-Match on DELETE, and both headers at once.
        self.assertText(self.delete("m", {"If-None-Match": "*"}), 400, "invalid precondition\n")
        self.assertText(self.put("m", "w", {"If-Match": '"%d"' % rev, "If-None-Match": "*"}), 400,
                        "invalid precondition\n")
        self.assertValue(self.node, "m", "v")
        self.assertEqual(etag_of(self.node.get("m")), rev)
        # Key and value errors come first, as in §2.
        self.assertText(self.put("m", "", {"If-Match": "bad"}), 400, "value cannot be empty\n")
        self.assertText(self.node.request("PUT", "/kv/a%20b", "x", {"If-Match": "bad"}), 400,
                        "invalid key\n")

    def test_cas_counter(self):
        """20 clients increment one counter with GET + PUT If-Match, retrying
        on 412: no increment is lost, none counted twice."""
        self.assertText(self.put("counter", "0"), 200, b"")
        clients, per_client = 20, 5
        lock = threading.Lock()
        stats = {"attempts": 0, "successes": 0, "conflicts": 0, "errors": []}

        def worker():
            done = 0
            while done < per_client:
                try:
                    with self.node.conn(timeout=30) as c:
                        while done < per_client:
                            g = c.request("GET", "/kv/counter")
                            if g.status != 200:
                                raise AssertionError("GET %r" % (g,))
                            rev = etag_of(g)
                            new = str(int(g.body) + 1)
                            p = c.request("PUT", "/kv/counter", new, {"If-Match": '"%d"' % rev})
                            with lock:
                                stats["attempts"] += 1
                                if p.status == 200:
                                    stats["successes"] += 1
                                elif p.status == 412:
                                    stats["conflicts"] += 1
                            if p.status == 200:
                                done += 1
                            elif p.status != 412:
                                raise AssertionError("PUT %r" % (p,))
                except Exception as e:  # reported below
                    with lock:
                        stats["errors"].append(repr(e))
                    return

        threads = [threading.Thread(target=worker) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(stats["errors"], [])
        final = int(self.node.get("counter").body)
        print("\nCAS counter: clients=%d attempts=%d successes=%d conflicts(412)=%d final=%d"
              % (clients, stats["attempts"], stats["successes"], stats["conflicts"], final))
        self.assertEqual(stats["successes"], clients * per_client)
        self.assertEqual(final, stats["successes"])

    # ---- §11 ----------------------------------------------------------------

    def test_list_basic(self):
        revs = {}
        for k in ["a1", "a2", "a3", "b1", "b2", "c"]:
            revs[k] = etag_of(self.put(k, "v-" + k))
        out = self.list()
        self.assertEqual([i["key"] for i in out["items"]], ["a1", "a2", "a3", "b1", "b2", "c"])
        self.assertEqual(out["more"], False)
        self.assertGreaterEqual(out["revision"], revs["c"])
        for it in out["items"]:
            self.assertEqual(it["value"], "v-" + it["key"])
            self.assertEqual(it["revision"], revs[it["key"]])
        self.assertEqual(set(out.keys()), {"revision", "items", "more"})
        out = self.list("?prefix=a")
        self.assertEqual([i["key"] for i in out["items"]], ["a1", "a2", "a3"])
        out = self.list("?prefix=a&limit=2")
        self.assertEqual([i["key"] for i in out["items"]], ["a1", "a2"])
        self.assertTrue(out["more"])
        out = self.list("?prefix=a&limit=2&after=a2")
        self.assertEqual([i["key"] for i in out["items"]], ["a3"])
        self.assertFalse(out["more"])
        out = self.list("?after=b1")
        self.assertEqual([i["key"] for i in out["items"]], ["b2", "c"])
        out = self.list("?after=a")  # after need not exist
        self.assertEqual(out["items"][0]["key"], "a1")
        out = self.list("?prefix=b&keys-only=true")
        self.assertEqual(out["items"], [{"key": "b1", "revision": revs["b1"]},
                                        {"key": "b2", "revision": revs["b2"]}])
        out = self.list("?prefix=b&keys-only=false")
        self.assertEqual(out["items"][0]["value"], "v-b1")
        self.assertEqual(self.list("?prefix=zz")["items"], [])
        self.assertEqual(self.list("?prefix=")["items"][0]["key"], "a1")
        self.assertEqual(len(self.list("?consistency=stale")["items"]), 6)
        self.assertEqual(len(self.list("?limit=10000")["items"]), 6)
        self.assertEqual(len(self.list("?prefix=%61")["items"]), 3)  # percent-decoded

    def test_list_bad_parameters(self):
        for q in ["?limit=0", "?limit=10001", "?limit=abc", "?limit=", "?limit=-1",
                  "?limit=99999999999999999999"]:
            with self.subTest(query=q):
                self.assertText(self.node.request("GET", "/kv" + q), 400, "invalid limit\n")
        for q in ["?prefix=a%20b", "?prefix=%zz", "?prefix=" + "a" * 1025]:
            with self.subTest(query=q):
                self.assertText(self.node.request("GET", "/kv" + q), 400, "invalid prefix\n")
        self.assertText(self.node.request("GET", "/kv?after=a/b"), 400, "invalid after\n")
        self.assertText(self.node.request("GET", "/kv?keys-only=yes"), 400, "invalid keys-only\n")
        # §2 unchanged for the other methods of /kv.
        self.assertText(self.node.request("PUT", "/kv", "x"), 400, "key cannot be empty\n")
        self.assertText(self.node.request("DELETE", "/kv"), 400, "key cannot be empty\n")
        r = self.node.request("POST", "/kv", "x")
        self.assertText(r, 405, "method not allowed\n")

    def test_list_escaping(self):
        values = {"q": 'say "hi"\\n', "nl": "line1\nline2\ttab", "emoji": "caf\u00e9 \U0001F600",
                  "ctl": "a\x01b\x1fc\x7f", "slash": "</script>&<"}
        for k, v in values.items():
            self.assertText(self.put(k, v.encode("utf-8")), 200, b"")
        out = self.list()
        got = {i["key"]: i["value"] for i in out["items"]}
        self.assertEqual(got, values)

    def test_list_page_bounded_in_bytes(self):
        """A page stops once its keys and values would pass 4 MiB (more:
        true), whatever the limit; the next page goes on from there."""
        big = "x" * 1000000
        with self.node.conn() as c:
            for i in range(6):
                self.assertEqual(c.request("PUT", "/kv/big%d" % i, big).status, 200)
        out = self.list("?prefix=big&limit=10")
        self.assertEqual([i["key"] for i in out["items"]], ["big0", "big1", "big2", "big3"])
        self.assertTrue(out["more"])
        self.assertTrue(all(i["value"] == big for i in out["items"]))
        out = self.list("?prefix=big&limit=10&after=big3")
        self.assertEqual([i["key"] for i in out["items"]], ["big4", "big5"])
        self.assertFalse(out["more"])
        # Keys only: values do not count, every key fits one page.
        out = self.list("?prefix=big&limit=10&keys-only=true")
        self.assertEqual(len(out["items"]), 6)
        self.assertFalse(out["more"])

    def test_pagination_while_writing(self):
        """Every key present before paging starts is returned exactly once,
        in order, while other clients write new keys and overwrite old ones."""
        base = ["p%04d" % i for i in range(300)]
        with self.node.conn() as c:
            for k in base:
                self.assertEqual(c.request("PUT", "/kv/" + k, "v").status, 200)
        stop = threading.Event()
        errors = []

        def writer(seed):
            rng = random.Random(seed)
            try:
                with self.node.conn() as c:
                    i = 0
                    while not stop.is_set():
                        k = rng.choice(base) if i % 2 else "p%04d-new%d-%d" % (rng.randrange(300), seed, i)
                        r = c.request("PUT", "/kv/" + k, "w%d" % i)
                        if r.status != 200:
                            errors.append(repr(r))
                            return
                        i += 1
            except Exception as e:
                errors.append(repr(e))

        writers = [threading.Thread(target=writer, args=(s,)) for s in range(2)]
        for t in writers:
            t.start()
        try:
            seen = []
            after = ""
            pages = 0
            while True:
                q = "?prefix=p&limit=17" + ("&after=" + after if after else "")
                out = self.list(q)
                self.assertIsInstance(out, dict, out)
                pages += 1
                seen += [i["key"] for i in out["items"]]
                if not out["more"]:
                    break
                after = out["items"][-1]["key"]
        finally:
            stop.set()
            for t in writers:
                t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(len(seen), len(set(seen)), "a key was listed twice")
        for k in base:
            self.assertEqual(seen.count(k), 1, k)
        print("\npagination: %d pages, %d keys listed (%d preloaded) while writing"
              % (pages, len(seen), len(base)))

    # ---- §12 ----------------------------------------------------------------

    def test_txn_branches(self):
        # Compare on revision 0: "a" absent, so the success branch runs.
        body = {"compare": [{"key": "a", "revision": 0}],
                "success": [{"op": "put", "key": "a", "value": "1"}, {"op": "get", "key": "a"},
                            {"op": "get", "key": "zz"}],
                "failure": [{"op": "get", "key": "a"}]}
        r = self.txn(body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.content_type, JSON)
        out = json.loads(r.body)
        rev = out["revision"]
        self.assertEqual(out, {"succeeded": True, "revision": rev,
                               "results": [{}, {"value": "1", "revision": rev}, {"found": False}]})
        self.assertEqual(etag_of(self.node.get("a")), rev)
        # Now present: the failure branch runs, nothing changes.
        r = self.txn(body)
        out = json.loads(r.body)
        self.assertEqual(r.status, 200, r)
        self.assertFalse(out["succeeded"])
        self.assertGreater(out["revision"], rev)
        self.assertEqual(out["results"], [{"value": "1", "revision": rev}])
        # Compare on the key's revision; put and delete atomically.
        self.assertText(self.put("b", "x"), 200, b"")
        r = self.txn({"compare": [{"key": "a", "revision": rev}],
                      "success": [{"op": "put", "key": "a", "value": "2"},
                                  {"op": "delete", "key": "b"}]})
        out = json.loads(r.body)
        self.assertTrue(out["succeeded"], out)
        self.assertEqual(out["results"], [{}, {}])
        self.assertValue(self.node, "a", "2")
        self.assertEqual(etag_of(self.node.get("a")), out["revision"])
        self.assertText(self.node.get("b"), 404, "key not found\n")
        # No compare at all: succeeds.
        out = json.loads(self.txn({"success": [{"op": "get", "key": "a"}]}).body)
        self.assertTrue(out["succeeded"])
        self.assertEqual(out["results"][0]["value"], "2")
        # An empty object: nothing to do, still one entry.
        r = self.txn({})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body)["results"], [])

    def test_txn_bad_bodies(self):
        cases = [b"", b"not json", b"[]", b'{"compare": 1}', b'{"extra": []}',
                 b'{"success": [{"op": "cas", "key": "a"}]}',
                 b'{"success": [{"op": "put", "key": "a b", "value": "1"}]}',
                 b'{"success": [{"op": "put", "key": "a", "value": ""}]}',
                 b'{"success": [{"op": "put", "key": "a"}]}',
                 b'{"compare": [{"key": "a", "revision": -1}]}',
                 b'{"compare": [{"key": "a"}]}']
        for b in cases:
            with self.subTest(body=b):
                r = self.txn(b)
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.content_type, kvdtest.TEXT)
                self.assertTrue(r.body.endswith(b"\n") and len(r.body) > 1, r)
        r = self.txn(b'{"success": [{"op": "put", "key": "a b", "value": "1"}]}')
        self.assertIn(b"success[0]", r.body)
        self.assertIn(b"key", r.body)
        self.assertText(self.node.request("GET", "/txn"), 405, "method not allowed\n")
        self.assertEqual(self.node.request("GET", "/txn").header("Allow"), "POST")
        # Too many operations: 413.
        ops = [{"op": "get", "key": "k%d" % i} for i in range(129)]
        r = self.txn({"success": ops})
        self.assertEqual(r.status, 413, r)
        r = self.txn({"success": ops[:64], "failure": ops[:65]})
        self.assertEqual(r.status, 413, r)
        self.assertEqual(self.txn({"success": ops[:128]}).status, 200)
        # A body over 4 MiB: 413, and nothing written.
        big = json.dumps({"success": [{"op": "put", "key": "big", "value": "x" * (4 << 20)}]})
        r = self.txn(big)
        self.assertEqual(r.status, 413, r)
        self.assertText(self.node.get("big"), 404, "key not found\n")

    def test_metrics_labels(self):
        self.list()
        self.txn({})
        self.put("x", "1", {"If-None-Match": "*"})
        self.put("x", "1", {"If-None-Match": "*"})
        text = self.node.request("GET", "/metrics").body.decode()
        self.assertIn('kvd_http_requests_total{route="kv_list",method="GET",status="200"} 1', text)
        self.assertIn('kvd_http_requests_total{route="txn",method="POST",status="200"} 1', text)
        self.assertIn('kvd_http_requests_total{route="kv",method="PUT",status="412"} 1', text)


class ThreeNodes(cluster.ClusterCase):
    def test_cluster(self):
        c = self.make_cluster(n=3)
        leader, _term = c.wait_leader()
        follower = [n for n in c.nodes if n is not leader][0]
        r = leader.request("PUT", "/kv/a", b"1")
        self.assertEqual(r.status, 200, r)
        rev = int(r.headers["etag"].strip('"'))
        # Conditional writes, listings and transactions on a follower: 307.
        for method, path, body, headers in [
                ("PUT", "/kv/a", b"2", {"If-Match": '"%d"' % rev}),
                ("DELETE", "/kv/a", None, {"If-Match": '"%d"' % rev}),
                ("PUT", "/kv/n", b"2", {"If-None-Match": "*"}),
                ("GET", "/kv?prefix=a&limit=5", None, {}),
                ("POST", "/txn", b'{"success": []}', {})]:
            r = follower.request(method, path, body, headers=headers)
            self.assertEqual(r.status, 307, (method, path, r))
            self.assertEqual(r.headers["location"], "http://127.0.0.1:%d%s" % (leader.port, path))
        # A malformed precondition is refused by any node.
        r = follower.request("PUT", "/kv/a", b"2", headers={"If-Match": "7"})
        self.assertEqual((r.status, r.body), (400, b"invalid precondition\n"))
        # On the leader: conditional write, listing, transaction.
        r = leader.request("PUT", "/kv/a", b"2", headers={"If-Match": '"%d"' % rev})
        self.assertEqual(r.status, 200, r)
        rev2 = int(r.headers["etag"].strip('"'))
        r = leader.request("PUT", "/kv/a", b"3", headers={"If-Match": '"%d"' % rev})
        self.assertEqual((r.status, r.body), (412, b"precondition failed\n"))
        r = leader.request("POST", "/txn", json.dumps(
            {"compare": [{"key": "b", "revision": 0}], "success": [{"op": "put", "key": "b", "value": "B"}]}))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["succeeded"])
        out = leader.get("/kv").json()
        self.assertEqual([(i["key"], i["value"]) for i in out["items"]], [("a", "2"), ("b", "B")])
        self.assertEqual(out["items"][0]["revision"], rev2)
        # Stale listing and ETag on the follower once it has applied.
        c.wait_applied()
        r = follower.get("/kv?consistency=stale&keys-only=true")
        self.assertEqual(r.status, 200, r)
        self.assertEqual([i["key"] for i in r.json()["items"]], ["a", "b"])
        self.assertGreaterEqual(r.json()["revision"], out["items"][1]["revision"])
        r = follower.get("/kv/a?consistency=stale")
        self.assertEqual((r.status, r.headers["etag"]), (200, '"%d"' % rev2))
        c.assert_no_crash()


if __name__ == "__main__":
    unittest.main()
