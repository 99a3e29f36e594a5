"""test_cluster.py: leader election, redirects, failover, durability of
term/vote, partitions and /cluster/info on real 5-node kvd clusters
(API.md §1-§3, §5, §6). Each test starts its own cluster on loopback."""

import http.client
import json
import os
import threading
import time
import unittest

from flood import allow_descriptors, close_flood, open_flood
from cluster import INFO_FIELDS, Cluster, ClusterCase, Client, free_ports, wait_until


class TestClusterElection(ClusterCase):
    def test_leader_within_2s_of_start(self):
        c = self.make_cluster(5, start=False)
        t0 = time.monotonic()
        for n in c.nodes:
            n.start()
        for n in c.nodes:
            n.wait_ready(2.0)
        leader, term = c.wait_leader(timeout=max(0.1, 2.0 - (time.monotonic() - t0)),
                                     what="a leader within 2 s of start")
        self.assertLessEqual(time.monotonic() - t0, 2.0 + 0.2)
        self.assertGreaterEqual(term, 1)

    def test_one_leader_per_term_stable_for_3s(self):
        c = self.make_cluster(5)
        leader, term = c.wait_leader(timeout=5)
        leaders_by_term = {}
        end = time.monotonic() + 3.0
        samples = 0
        while time.monotonic() < end:
            for n, i in c.infos(c.nodes).items():
                self.assertIsNotNone(i, "%s did not answer /cluster/info" % n.id)
                if i["role"] == "leader":
                    leaders_by_term.setdefault(i["term"], set()).add(n.id)
                self.assertEqual(i["leader"], leader.id, "%s: leader changed: %r" % (n.id, i))
                self.assertEqual(i["term"], term, "%s: term changed: %r" % (n.id, i))
            samples += 1
            time.sleep(0.05)
        for t, ids in leaders_by_term.items():
            self.assertEqual(len(ids), 1, "term %d had leaders %s" % (t, sorted(ids)))
        self.assertEqual(leaders_by_term, {term: {leader.id}})
        self.assertGreater(samples, 10)

    def test_followers_redirect_with_exact_location(self):
        c = self.make_cluster(5)
        leader, _ = c.wait_leader(timeout=5)
        want_prefix = "http://127.0.0.1:%d" % leader.port
        cases = [
            ("GET", "/kv/some-key", None),
            ("GET", "/kv/some-key?a=1&b=x%20y", None),
            ("PUT", "/kv/some-key?x=1", "value"),
            ("PUT", "/kv/k.2", "v"),
            ("PUT", "/kv/a%3Ab", "v"),
            ("DELETE", "/kv/some-key", None),
            ("DELETE", "/kv/some-key?q=2", None),
            ("DELETE", "/clear", None),
        ]
        for f in c.nodes:
            if f is leader:
                continue
            for method, path, body in cases:
                r = f.request(method, path, body)
                self.assertEqual(r.status, 307, "%s %s on follower %s: %r" % (method, path, f.id, r))
                self.assertEqual(r.headers.get("location"), want_prefix + path,
                                 "%s %s on follower %s" % (method, path, f.id))
        # Nothing was written by the redirected requests.
        r = leader.get("/kv/some-key")
        self.assertEqual((r.status, r.body), (404, b"key not found\n"))

    def test_leader_serves_every_kv_operation(self):
        c = self.make_cluster(5)
        leader, _ = c.wait_leader(timeout=5)
        text = "text/plain; charset=utf-8"
        value = "a b\tc \U0001F600 \u00e9"
        r = leader.request("PUT", "/kv/k1", value)
        self.assertEqual((r.status, r.body), (200, b""))
        self.assertEqual(r.headers.get("content-type"), text)
        r = leader.get("/kv/k1")
        self.assertEqual((r.status, r.body), (200, value.encode("utf-8")))
        self.assertEqual(r.headers.get("content-type"), text)
        r = leader.request("PUT", "/kv/k1", "second")
        self.assertEqual(r.status, 200)
        self.assertEqual(leader.get("/kv/k1").body, b"second")
        r = leader.get("/kv/absent")
        self.assertEqual((r.status, r.body), (404, b"key not found\n"))
        r = leader.request("DELETE", "/kv/k1")
        self.assertEqual((r.status, r.body), (200, b""))
        r = leader.get("/kv/k1")
        self.assertEqual((r.status, r.body), (404, b"key not found\n"))
        r = leader.request("DELETE", "/kv/k1")
        self.assertEqual(r.status, 200, "DELETE of an absent key: %r" % r)
        for k in ("a", "b", "c"):
            self.assertEqual(leader.request("PUT", "/kv/" + k, "v" + k).status, 200)
        r = leader.request("DELETE", "/clear")
        self.assertEqual(r.status, 200)
        for k in ("a", "b", "c"):
            r = leader.get("/kv/" + k)
            self.assertEqual((r.status, r.body), (404, b"key not found\n"))
        # The writes reached every node.
        self.assertEqual(leader.request("PUT", "/kv/last", "x").status, 200)
        c.wait_applied()
        for n in c.nodes:
            self.assertEqual(n.stale_get("last"), (200, b"x"), n.id)
            self.assertEqual(n.stale_get("a"), (404, b"key not found\n"), n.id)

    def test_leader_killed_new_leader_within_3s_old_rejoins_as_follower(self):
        c = self.make_cluster(5)
        old, term = c.wait_leader(timeout=5)
        old.kill()
        t0 = time.monotonic()
        rest = [n for n in c.nodes if n is not old]
        new, new_term = c.wait_leader(rest, timeout=3.0, what="a new leader within 3 s")
        self.assertLessEqual(time.monotonic() - t0, 3.3)
        self.assertIsNot(new, old)
        self.assertGreater(new_term, term)
        old.start()
        old.wait_ready()

        def rejoined():
            i = old.try_info()
            return i is not None and i["role"] == "follower" and i["leader"] == new.id and i

        info = wait_until(rejoined, 5.0, what="the old leader following %s" % new.id)
        self.assertGreaterEqual(info["term"], new_term)
        leader, _ = c.wait_leader(timeout=5)
        self.assertIs(leader, new, "the restarted old leader disrupted the new one")

    def test_term_and_voted_for_survive_sigkill(self):
        c = self.make_cluster(5)
        leader, term = c.wait_leader(timeout=5)
        before = {n: n.info() for n in c.nodes}
        for n, i in before.items():
            self.assertEqual(i["term"], term)
        voters = [n.id for n, i in before.items() if i["voted-for"] == leader.id]
        self.assertGreaterEqual(len(voters), 3, "a leader of term %d needs 3 votes in it: %r" % (term, before))
        for n in c.nodes:
            n.kill()
        # Long election timeouts: nobody campaigns while we look.
        for n in c.nodes:
            n.start(["--election-timeout-ms", "8000-9000"])
        for n in c.nodes:
            n.wait_ready()
        for n in c.nodes:
            i = n.info()
            self.assertEqual(i["term"], before[n]["term"], "%s term lost across SIGKILL" % n.id)
            self.assertEqual(i["voted-for"], before[n]["voted-for"], "%s voted-for lost across SIGKILL" % n.id)

    def test_restart_with_other_peers_flag_keeps_log_membership(self):
        c = self.make_cluster(3)
        leader, term = c.wait_leader(timeout=5)
        x = [n for n in c.nodes if n is not leader][0]
        x.kill()
        bogus = free_ports(2)
        other = ",".join([x.id] + [":%d" % p for p in bogus])
        x.args[x.args.index("--peers") + 1] = other
        x.start()
        x.wait_ready()
        self.assertEqual(c.put("k", "v").status, 200)
        wait_until(lambda: x.stale_get("k") == (200, b"v"), 5.0, what="x to follow its original cluster")
        i = x.info()
        self.assertEqual(i["peers"], sorted(c.ids), "a differing --peers flag replaced the log's configuration")
        self.assertEqual(i["leader"], leader.id)


class TestClusterFlood(ClusterCase):
    def test_pipelining_flood_on_leader_keeps_leadership(self):
        """One client opens 1,500 connections to the leader and sends 64 KiB
        of pipelined GETs on each at once, never reading. Before reads shared
        a per-iteration budget (1,024 requests, then 4 per read), the node
        parsed 32 requests of every readable connection in one poll phase: a
        PUT during the flood timed out after 10 s (3 runs of 3), and with
        4,000 connections a follower took over. Now the term and the leader
        stay, and the PUT is acknowledged (270-530 ms, 8 runs). Three nodes,
        the client and the flood share two cores here; more connections
        (3,000) can starve a follower of CPU long enough to start an
        election, which is the machine, not the node (FLOOD_CONNS sets it)."""
        conns = int(os.environ.get("FLOOD_CONNS", "1500"))
        allow_descriptors(self, conns)
        c = self.make_cluster(3)
        leader, term = c.wait_leader(timeout=5)
        self.assertEqual(leader.request("PUT", "/kv/k", "v").status, 200)
        socks, _ = open_flood(leader.host, leader.port, conns,
                              b"GET /kv/k HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            t0 = time.monotonic()
            r = leader.request("PUT", "/kv/during", "d", timeout=10.0)
            ms = (time.monotonic() - t0) * 1000
            self.assertEqual(r.status, 200, r.text())
            print("    [flood] PUT during the flood: %.0f ms" % ms)
            time.sleep(2.0)
        finally:
            close_flood(socks)
        time.sleep(1.0)
        for n, i in c.infos(c.nodes).items():
            self.assertIsNotNone(i, "%s did not answer /cluster/info" % n.id)
            self.assertEqual(i["term"], term, "%s: term changed under the flood: %r" % (n.id, i))
            self.assertEqual(i["leader"], leader.id, "%s: leader changed: %r" % (n.id, i))
        self.assertEqual(leader.get("/kv/during").body, b"d")


class TestClusterPartition(ClusterCase):
    def _split_with_leader_in_minority(self, c):
        leader, term = c.wait_leader(timeout=5)
        others = [n for n in c.nodes if n is not leader]
        minority = [leader, others[0]]
        majority = others[1:]
        c.partition(minority, majority)
        return leader, term, minority, majority

    def test_partitioned_leader_steps_down_within_500ms(self):
        c = self.make_cluster(5)
        self.assertEqual(c.put("k", "v").status, 200)
        c.wait_applied()
        old, term, minority, majority = self._split_with_leader_in_minority(c)
        t0 = time.monotonic()
        wait_until(lambda: old.info()["role"] != "leader", 1.0, interval=0.02,
                   what="the cut-off leader to step down (500 ms + one heartbeat)")
        # It forgets the leader when stepping down, and knows no other.
        i = old.info()
        self.assertIsNone(i["leader"], "stepped-down leader still names a leader: %r" % i)
        r = old.request("PUT", "/kv/k", "w")
        self.assertEqual((r.status, r.body), (503, b"no leader\n"))

    def test_partition_majority_elects_minority_has_no_leader(self):
        c = self.make_cluster(5)
        self.assertEqual(c.put("k", "v").status, 200)
        c.wait_applied()
        old, term, minority, majority = self._split_with_leader_in_minority(c)
        t0 = time.monotonic()
        new, new_term = c.wait_leader(majority, timeout=5.0, what="a leader among the 3")
        self.assertGreater(new_term, term)
        self.assertIn(new, majority)

        # Within the step-down time plus one election timeout, the 2 forget
        # the leader (null in /cluster/info).
        def forgot():
            infos = [n.try_info() for n in minority]
            return all(i is not None and i["leader"] is None and i["role"] != "leader" for i in infos)

        wait_until(forgot, max(0.5, 2.5 - (time.monotonic() - t0)),
                   what="the 2-node side to report leader null")
        end = time.monotonic() + 3.0
        k = 0
        while time.monotonic() < end:
            for n in minority:
                i = n.info()
                self.assertNotEqual(i["role"], "leader", "%s leads in a minority: %r" % (n.id, i))
                self.assertIsNone(i["leader"], "%s: %r" % (n.id, i))
                r = n.request("PUT", "/kv/minority-%d" % k, "x")
                self.assertEqual((r.status, r.body), (503, b"no leader\n"), "PUT on minority %s" % n.id)
                r = n.request("DELETE", "/kv/minority-%d" % k)
                self.assertEqual((r.status, r.body), (503, b"no leader\n"), "DELETE on minority %s" % n.id)
                r = n.request("GET", "/kv/k")
                self.assertEqual((r.status, r.body), (503, b"no leader\n"), "GET on minority %s" % n.id)
                r = n.request("DELETE", "/clear")
                self.assertEqual((r.status, r.body), (503, b"no leader\n"), "DELETE /clear on minority %s" % n.id)
                self.assertEqual(n.stale_get("k"), (200, b"v"), "stale GET on minority %s" % n.id)
                k += 1
            time.sleep(0.1)
        # The majority kept its single leader and serves writes.
        self.assertEqual(c.stable_leader(majority), (new, new_term))
        self.assertEqual(new.request("PUT", "/kv/maj", "1").status, 200)

    def test_heal_gives_one_leader_all_agree(self):
        c = self.make_cluster(5)
        old, term, minority, majority = self._split_with_leader_in_minority(c)
        new, new_term = c.wait_leader(majority, timeout=5.0)
        self.assertEqual(new.request("PUT", "/kv/during", "1").status, 200)
        c.heal()
        leader, t = c.wait_leader(c.nodes, timeout=5.0, what="one leader after heal, all agreeing")
        self.assertGreaterEqual(t, new_term)
        # Stable: still the same leader a second later.
        time.sleep(1.0)
        self.assertEqual(c.stable_leader(c.nodes), (leader, t))
        c.wait_applied()
        for n in c.nodes:
            self.assertEqual(n.stale_get("during"), (200, b"1"), n.id)

    def test_partitioned_node_restarted_stays_partitioned(self):
        c = self.make_cluster(5)
        leader, term = c.wait_leader(timeout=5)
        x = [n for n in c.nodes if n is not leader][0]
        # Only x blocks: if x forgot its partition it would hear the leader.
        x.partition([x.id])
        wait_until(lambda: x.info()["leader"] is None, 3.0, what="isolated node to forget the leader")
        x.kill()
        x.start()
        x.wait_ready()
        r = leader.request("PUT", "/kv/after-restart", "1")
        self.assertEqual(r.status, 200)
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            i = x.info()
            self.assertIsNone(i["leader"], "restarted partitioned node heard the leader: %r" % i)
            self.assertNotEqual(i["role"], "leader")
            self.assertEqual(x.stale_get("after-restart"), (404, b"key not found\n"))
            time.sleep(0.1)
        self.assertEqual(c.stable_leader([n for n in c.nodes if n is not x]), (leader, term),
                         "the isolated node disturbed the cluster")
        # Heal survives too: heal, restart, and x catches up.
        x.heal()
        x.kill()
        x.start()
        x.wait_ready()
        wait_until(lambda: x.stale_get("after-restart") == (200, b"1"), 5.0, what="x to catch up after heal")
        self.assertEqual(x.info()["leader"], leader.id)

    def test_isolated_follower_does_not_raise_term_or_disrupt(self):
        c = self.make_cluster(5)
        leader, term = c.wait_leader(timeout=5)
        x = [n for n in c.nodes if n is not leader][0]
        rest = [n for n in c.nodes if n is not x]
        # Own id not listed: x may talk to nobody; the others exclude x.
        x.partition([])
        for n in rest:
            n.partition([m.id for m in rest])
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            i = x.info()
            self.assertEqual(i["term"], term, "cut-off node raised its term (pre-vote): %r" % i)
            self.assertNotEqual(i["role"], "leader")
            time.sleep(0.1)
        c.heal()
        time.sleep(1.5)
        self.assertEqual(c.stable_leader(), (leader, term), "healing a cut-off follower disrupted the leader")

    def test_new_partition_replaces_previous(self):
        c = self.make_cluster(5)
        leader, term = c.wait_leader(timeout=5)
        x = [n for n in c.nodes if n is not leader][0]
        x.partition([x.id])
        self.assertEqual(c.put("k1", "1").status, 200)
        time.sleep(0.5)
        self.assertEqual(x.stale_get("k1")[0], 404, "isolated node received a write")
        # A partition allowing everyone replaces the isolation.
        x.partition(c.ids)
        wait_until(lambda: x.stale_get("k1") == (200, b"1"), 5.0, what="x to catch up after the new partition")
        # A partition allowing only the leader: x still follows it.
        x.partition([leader.id])
        self.assertEqual(c.put("k2", "2").status, 200)
        wait_until(lambda: x.stale_get("k2") == (200, b"2"), 5.0, what="x to hear the allowed leader")
        self.assertEqual(x.info()["leader"], leader.id)

    def test_isolated_leader_serves_no_stale_read(self):
        c = self.make_cluster(5)
        leader, term = c.wait_leader(timeout=5)
        self.assertEqual(leader.request("PUT", "/kv/r", "old").status, 200)
        others = [n for n in c.nodes if n is not leader]
        reads = []
        stop = threading.Event()

        def reader():
            cl = Client(timeout=3)
            while not stop.is_set():
                t_inv = time.monotonic()
                try:
                    r = cl.request(leader.host, leader.port, "GET", "/kv/r")
                    res = (r.status, r.body)
                except (OSError, http.client.HTTPException) as e:
                    res = ("error", repr(e))
                reads.append((t_inv, res))
                time.sleep(0.005)
            cl.close()

        c.partition([leader], others)
        th = threading.Thread(target=reader)
        th.start()
        try:
            new, _ = c.wait_leader(others, timeout=5)
            r = new.request("PUT", "/kv/r", "new")
            self.assertEqual(r.status, 200)
            t_ack = time.monotonic()
            time.sleep(1.0)
        finally:
            stop.set()
            th.join(10)
        stale = [(round(t - t_ack, 3), res) for t, res in reads if t > t_ack and res == (200, b"old")]
        self.assertEqual(stale, [], "the cut-off old leader served a stale linearizable read")
        self.assertTrue(any(t > t_ack for t, _ in reads))


class TestClusterIsolation(ClusterCase):
    def test_foreign_cluster_leader_cannot_mix_logs(self):
        """API.md §1: nodes of different clusters never mix their logs. A
        second cluster B whose --peers names a node x of cluster A (two B
        nodes are a majority of B) must not make x take B's entries."""
        a = self.make_cluster(3)
        la, _ = a.wait_leader(timeout=5)
        for i in range(3):
            self.assertEqual(a.put("a%d" % i, "A").status, 200)
        x = [n for n in a.nodes if n is not la][0]
        b = Cluster(self.tmpdir, 2, "peers")
        self.clusters.append(b)
        ids = [n.id for n in b.nodes] + [x.id]
        for n in b.nodes:
            n.args[n.args.index("--peers") + 1] = ",".join(ids)
        b.start()
        lb, _ = b.wait_leader(timeout=5)
        for i in range(20):
            self.assertEqual(lb.request("PUT", "/kv/b%d" % i, "B").status, 200)
        self.assertEqual(a.put("a-last", "A").status, 200)
        time.sleep(1.0)
        mixed = [e for e in x.get("/log?from=1").json()["entries"] if e["command"].startswith("PUT b")]
        self.assertEqual(mixed, [], "x took entries from another cluster's leader")
        self.assertEqual(x.stale_get("b19"), (404, b"key not found\n"), "x applied another cluster's write")
        self.assertEqual(x.stale_get("a-last"), (200, b"A"), "x stopped following its own cluster")
        i = x.info()
        self.assertIn(i["leader"], a.ids + [None], "x follows a leader of another cluster: %r" % i)

    def test_malformed_raft_rpcs_do_not_hurt_the_cluster(self):
        c = self.make_cluster(3)
        leader, term = c.wait_leader(timeout=5)
        f = [n for n in c.nodes if n is not leader][0]
        bodies = [b"", b"{", b"null", b"[]", b"\xff\xfe", b'{"term": "x"}', b'{"term": -1}',
                  b'{"term": 1e309}', b'{"entries": 5}', b'{"term": 1, "entries": [{"index": "a"}]}',
                  b'{"term": 1, "leader-id": 7, "prev-log-index": -5, "entries": [], "leader-commit": -1}',
                  b"x" * 100000]
        paths = ["/raft/append-entries", "/raft/request-vote", "/raft/timeout-now",
                 "/raft/install-snapshot", "/raft/install-snapshot?term=x&offset=-1&done=maybe",
                 "/raft/install-snapshot?term=1&leader-id=&last-included-index=99999999999999999999"
                 "&last-included-term=1&offset=0&done=1"]
        for node in (f, leader):
            for p in paths:
                for b in bodies:
                    try:
                        r = node.request("POST", p, b, timeout=5)
                    except (OSError, http.client.HTTPException):
                        r = None
                    self.assertTrue(node.alive(), "%s died on POST %s %r:\n%s" % (node.id, p, b[:40], node.log_tail()))
                    if r is not None:
                        self.assertNotEqual(r.status // 100, 2, "POST %s %r accepted: %r" % (p, b[:40], r))
        self.assertEqual(c.stable_leader(), (leader, term), "malformed RPCs changed leadership")
        self.assertEqual(c.put("still", "ok").status, 200)
        c.wait_applied()
        for n in c.nodes:
            self.assertEqual(n.stale_get("still"), (200, b"ok"))


class TestClusterInfo(ClusterCase):
    def _check_info(self, c, node, info, expect_peers):
        self.assertEqual(set(info.keys()), INFO_FIELDS, "fields of %s /cluster/info" % node.id)
        self.assertEqual(info["id"], node.id)
        self.assertIn(info["role"], ("leader", "candidate", "follower"))
        for k in ("term", "commit-index", "last-applied"):
            self.assertIs(type(info[k]), int, "%s is %r" % (k, info[k]))
            self.assertGreaterEqual(info[k], 0)
        for k in ("leader", "voted-for"):
            self.assertTrue(info[k] is None or type(info[k]) is str, "%s is %r" % (k, info[k]))
        self.assertIs(type(info["peers"]), list)
        self.assertIs(type(info["learners"]), list)
        self.assertEqual(info["peers"], expect_peers)
        self.assertEqual(info["peers"], sorted(info["peers"]))
        self.assertEqual(info["learners"], [])
        self.assertLessEqual(info["last-applied"], info["commit-index"])

    def _check_cluster(self, c, peers_of):
        leader, term = c.wait_leader(timeout=5)
        self.assertEqual(leader.request("PUT", "/kv/k", "v").status, 200)
        c.wait_applied()
        for n in c.nodes:
            r = n.get("/cluster/info")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers.get("content-type"), "application/json")
            info = json.loads(r.body)
            self._check_info(c, n, info, peers_of(n))
            self.assertEqual(info["leader"], leader.id)
            self.assertEqual(info["term"], term)
            self.assertEqual(info["role"], "leader" if n is leader else "follower")
            self.assertGreaterEqual(info["commit-index"], 2)
        self.assertEqual(leader.info()["voted-for"], leader.id)
        return leader

    def test_info_fields_with_peers_flag(self):
        c = self.make_cluster(5)
        self._check_cluster(c, lambda n: sorted(c.ids))
        for i in c.ids:
            self.assertTrue(i.startswith(":"))

    def test_info_fields_with_env_ids(self):
        c = self.make_cluster(3, mode="env")
        leader = self._check_cluster(c, lambda n: sorted(x for x in c.ids if x != n.id))
        for i in c.ids:
            self.assertTrue(i.startswith("127.0.0.1:"))
        # Redirects name the leader's configured host:port.
        f = [n for n in c.nodes if n is not leader][0]
        r = f.request("PUT", "/kv/x?y=1", "v")
        self.assertEqual(r.status, 307)
        self.assertEqual(r.headers.get("location"), "http://%s/kv/x?y=1" % leader.id)

    def test_hostname_ids_reported_and_redirected_as_configured(self):
        c = self.make_cluster(3, mode="env", id_host="localhost")
        leader = self._check_cluster(c, lambda n: sorted(x for x in c.ids if x != n.id))
        self.assertTrue(leader.id.startswith("localhost:"))
        f = [n for n in c.nodes if n is not leader][0]
        r = f.request("GET", "/kv/x?y=1")
        self.assertEqual(r.status, 307)
        self.assertEqual(r.headers.get("location"), "http://%s/kv/x?y=1" % leader.id)

    def test_info_lone_env_node_reports_no_peers(self):
        c = self.make_cluster(1, mode="env")
        n = c.nodes[0]
        info = n.info()
        self._check_info(c, n, info, [])
        self.assertEqual(info["role"], "leader")
        self.assertEqual(info["leader"], n.id)
        self.assertEqual(n.request("PUT", "/kv/a", "b").status, 200)


if __name__ == "__main__":
    unittest.main()
