"""test_cluster_membership.py: membership changes on real kvd clusters
(API.md §1 Bootstrap, §3): pushing and pulling a lone empty node into a
cluster, --join, leave, removing a dead node and the leader, joint changes,
one change at a time, redirects, and leadership transfer."""

import http.client
import json
import os
import threading
import time
import unittest

from cluster import ClusterCase, Client, Node, free_ports, wait_until


class MembershipCase(ClusterCase):
    def lone_node(self, extra=()):
        """A new one-member node (no peers), started and ready."""
        port = free_ports(1)[0]
        d = os.path.join(self.tmpdir, "lone-%d" % port)
        n = Node(":%d" % port, "127.0.0.1", port, d, d + ".log", ["--port", str(port), "--working-dir", d] + list(extra))
        self.lone.append(n)
        n.start()
        return n

    def setUp(self):
        super().setUp()
        self.lone = []
        self.addCleanup(self._kill_lone)

    def _kill_lone(self):
        for n in self.lone:
            n.kill()
            if self._failed():
                print("\n---- %s ----\n%s" % (n.id, n.log_tail()))

    def post(self, node, path, obj=None, timeout=30.0):
        body = b"" if obj is None else json.dumps(obj).encode()
        return node.request("POST", path, body, timeout=timeout)

    def wait_peers(self, nodes, ids, timeout=15.0):
        want = sorted(ids)

        def ok():
            for n in nodes:
                i = n.try_info()
                if i is None or i["peers"] != want or i["learners"] != []:
                    return False
            return True

        wait_until(ok, timeout, what="every node to report peers %s" % want)

    def seed(self, c, n=10):
        for i in range(n):
            self.assertEqual(c.put("m%d" % i, "v%d" % i).status, 200)


class TestMembership(MembershipCase):
    def test_members_add_pushes_lone_empty_node_in(self):
        c = self.make_cluster(3)
        leader, _ = c.wait_leader(timeout=5)
        self.seed(c)
        x = self.lone_node()
        x.wait_ready()
        r = self.post(leader, "/cluster/members", {"add": [x.id]})
        self.assertEqual(r.status, 200, r)
        self.wait_peers(c.nodes + [x], c.ids + [x.id])
        wait_until(lambda: x.stale_get("m9") == (200, b"v9"), 10, what="the new member to catch up")
        self.assertEqual(x.info()["leader"], leader.id)
        self.assertEqual(c.put("after", "1").status, 200)
        wait_until(lambda: x.stale_get("after") == (200, b"1"), 5, what="replication to the new member")

    def test_join_pulls_lone_empty_node_in(self):
        c = self.make_cluster(3)
        leader, _ = c.wait_leader(timeout=5)
        self.seed(c)
        x = self.lone_node()
        x.wait_ready()
        r = self.post(x, "/cluster/join", {"leader": leader.id})
        self.assertEqual(r.status, 200, r)
        # 200 only once x is a voting member.
        i = x.info()
        self.assertIn(x.id, leader.info()["peers"])
        self.wait_peers(c.nodes + [x], c.ids + [x.id])
        wait_until(lambda: x.stale_get("m9") == (200, b"v9"), 10, what="the joined node to catch up")

    def test_join_flag_retries_until_member(self):
        c = self.make_cluster(3)
        leader, _ = c.wait_leader(timeout=5)
        self.seed(c, 3)
        x = self.lone_node(["--join", leader.id])
        x.wait_ready()
        self.wait_peers(c.nodes + [x], c.ids + [x.id], timeout=20)
        wait_until(lambda: x.stale_get("m2") == (200, b"v2"), 10, what="the --join node to catch up")

    def test_node_with_own_data_cannot_join_409(self):
        c = self.make_cluster(3)
        leader, _ = c.wait_leader(timeout=5)
        x = self.lone_node()
        x.wait_ready()
        self.assertEqual(x.request("PUT", "/kv/mine", "x").status, 200)
        r = self.post(x, "/cluster/join", {"leader": leader.id})
        self.assertEqual(r.status, 409, r)
        r = self.post(leader, "/cluster/members", {"add": [x.id]})
        self.assertEqual(r.status, 409, r)
        self.assertEqual(leader.info()["peers"], sorted(c.ids))
        self.assertEqual(x.stale_get("mine"), (200, b"x"))

    def test_leave_removes_the_node(self):
        c = self.make_cluster(3)
        leader, _ = c.wait_leader(timeout=5)
        f = [n for n in c.nodes if n is not leader][0]
        r = self.post(f, "/cluster/leave")
        self.assertEqual(r.status, 200, r)
        rest = [n for n in c.nodes if n is not f]
        self.wait_peers(rest, [n.id for n in rest])
        self.assertEqual(c.put("after-leave", "1").status, 200)

    def test_remove_dead_node(self):
        c = self.make_cluster(3)
        leader, _ = c.wait_leader(timeout=5)
        f = [n for n in c.nodes if n is not leader][0]
        f.kill()
        r = self.post(leader, "/cluster/members", {"remove": [f.id]})
        self.assertEqual(r.status, 200, r)
        rest = [n for n in c.nodes if n is not f]
        self.wait_peers(rest, [n.id for n in rest])
        # Two voters left: both needed, and both are up.
        self.assertEqual(c.put("after-remove", "1").status, 200)

    def test_removed_leader_steps_down(self):
        c = self.make_cluster(3)
        leader, term = c.wait_leader(timeout=5)
        r = self.post(leader, "/cluster/members", {"remove": [leader.id]})
        self.assertEqual(r.status, 200, r)
        rest = [n for n in c.nodes if n is not leader]
        new, _ = c.wait_leader(rest, timeout=5, what="a leader among the remaining two")
        self.assertIsNot(new, leader)
        wait_until(lambda: leader.info()["role"] != "leader", 3, what="the removed leader to step down")
        self.wait_peers(rest, [n.id for n in rest])

    def test_joint_add_two_remove_one(self):
        c = self.make_cluster(3)
        leader, _ = c.wait_leader(timeout=5)
        self.seed(c, 5)
        x, y = self.lone_node(), self.lone_node()
        x.wait_ready()
        y.wait_ready()
        gone = [n for n in c.nodes if n is not leader][0]
        r = self.post(leader, "/cluster/members", {"add": [x.id, y.id], "remove": [gone.id]})
        self.assertEqual(r.status, 200, r)
        members = [n for n in c.nodes if n is not gone] + [x, y]
        self.wait_peers(members, [n.id for n in members])
        for n in (x, y):
            wait_until(lambda: n.stale_get("m4") == (200, b"v4"), 10, what="%s to catch up" % n.id)

    def test_second_concurrent_change_is_409(self):
        c = self.make_cluster(3)
        leader, _ = c.wait_leader(timeout=5)
        # A learner that never answers keeps the first change pending.
        ghost = ":%d" % free_ports(1)[0]
        first = {}

        def add_ghost():
            try:
                first["r"] = self.post(leader, "/cluster/members", {"add": [ghost]}, timeout=20)
            except (OSError, http.client.HTTPException) as e:
                first["r"] = e

        t = threading.Thread(target=add_ghost, daemon=True)
        t.start()
        wait_until(lambda: ghost in leader.info()["learners"] or "r" in first, 5,
                   what="the ghost to be a learner")
        self.assertNotIn("r", first, "the add of an unreachable node finished: %r" % first.get("r"))
        x = self.lone_node()
        x.wait_ready()
        r = self.post(leader, "/cluster/members", {"add": [x.id]})
        self.assertEqual(r.status, 409, r)

    def test_members_and_transfer_on_follower_redirect(self):
        c = self.make_cluster(3)
        leader, _ = c.wait_leader(timeout=5)
        f = [n for n in c.nodes if n is not leader][0]
        for path, obj in (("/cluster/members", {"add": [":1"]}), ("/cluster/transfer-leadership", {"to": f.id})):
            r = self.post(f, path, obj)
            self.assertEqual(r.status, 307, "%s on a follower: %r" % (path, r))
            self.assertEqual(r.headers.get("location"), "http://127.0.0.1:%d%s" % (leader.port, path))
        self.assertEqual(leader.info()["peers"], sorted(c.ids))

    def test_transfer_leadership_to_target(self):
        c = self.make_cluster(3)
        leader, term = c.wait_leader(timeout=5)
        target = [n for n in c.nodes if n is not leader][1]
        r = self.post(leader, "/cluster/transfer-leadership", {"to": target.id})
        self.assertEqual(r.status, 200, r)
        # 200 only once the target leads.
        i = target.info()
        self.assertEqual(i["role"], "leader", "target after a 200 transfer: %r" % i)
        self.assertGreater(i["term"], term)
        got, _ = c.wait_leader(timeout=5)
        self.assertIs(got, target)
        self.assertEqual(c.put("after-transfer", "1").status, 200)

    def test_env_form_peers_follow_membership(self):
        c = self.make_cluster(3, mode="env")
        leader, _ = c.wait_leader(timeout=5)
        port = free_ports(1)[0]
        d = os.path.join(self.tmpdir, "lone-env-%d" % port)
        x = Node("127.0.0.1:%d" % port, "127.0.0.1", port, d, d + ".log", [], env={"ADDR": "127.0.0.1:%d" % port, "DATA_DIR": d})
        self.lone.append(x)
        x.start()
        x.wait_ready()
        self.assertEqual(x.info()["peers"], [])
        r = self.post(leader, "/cluster/members", {"add": [x.id]})
        self.assertEqual(r.status, 200, r)
        everyone = c.nodes + [x]

        def others_listed():
            for n in everyone:
                i = n.try_info()
                if i is None or i["peers"] != sorted(m.id for m in everyone if m is not n):
                    return False
            return True

        wait_until(others_listed, 10, what="ADDR-form nodes to list the other voters, x included")
        gone = [n for n in c.nodes if n is not leader][0]
        r = self.post(leader, "/cluster/members", {"remove": [gone.id]})
        self.assertEqual(r.status, 200, r)
        everyone.remove(gone)
        wait_until(others_listed, 10, what="ADDR-form peers to drop the removed node")


if __name__ == "__main__":
    unittest.main()
