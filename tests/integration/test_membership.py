"""Membership and leadership through the API (API.md §3): --join, members
add/remove (single-server and joint), transfer-leadership, leave, and the
redirects and refusals around them."""

import json
import unittest

from kvdtest import KvdTestCase, free_port, wait_until


class MembershipTest(KvdTestCase):
    def setUp(self):
        super().setUp()
        ports = [free_port() for _ in range(3)]
        self.peers = ",".join(":%d" % p for p in ports)
        self.members = [self.new_node(port=p, args=["--peers", self.peers]) for p in ports]
        for n in self.members:
            n.start(wait=False)
        for n in self.members:
            n.wait_ready()
        wait_until(lambda: self.leader() is not None, 15, what="a leader")

    def info(self, node):
        r = node.request("GET", "/cluster/info")
        return json.loads(r.body) if r.status == 200 else None

    def leader(self):
        for n in self.members:
            if n.running():
                i = self.info(n)
                if i and i["role"] == "leader":
                    return n
        return None

    def post(self, node, path, body):
        return node.request("POST", path, json.dumps(body) if body is not None else None,
                            headers={"Content-Type": "application/json"})

    def test_join_adds_a_voter_that_has_the_data(self):
        leader = self.leader()
        for i in range(20):
            self.assertPutOk(leader, "k%d" % i, "v%d" % i)
        new = self.new_node(args=["--join", ":%d" % self.members[0].port])
        new.start()
        wait_until(lambda: ":%d" % new.port in (self.info(self.leader()) or {}).get("peers", []),
                   20, what="the joined node in the leader's peers")
        wait_until(lambda: new.get("k19", "?consistency=stale").status == 200, 10,
                   what="the data on the joined node")
        self.assertEqual(new.get("k19", "?consistency=stale").body, b"v19")
        i = self.info(new)
        self.assertEqual(i["role"], "follower")
        self.assertIn(":%d" % new.port, i["peers"])

    def test_remove_then_joint_add_and_remove(self):
        leader = self.leader()
        others = [n for n in self.members if n is not leader]
        r = self.post(leader, "/cluster/members", {"remove": [":%d" % others[0].port]})
        self.assertEqual(r.status, 200, r.body)
        self.assertNotIn(":%d" % others[0].port, self.info(leader)["peers"])
        self.assertPutOk(leader, "after-remove", "v")
        # Joint consensus: put the removed node back and take another out.
        r = self.post(leader, "/cluster/members",
                      {"add": [":%d" % others[0].port], "remove": [":%d" % others[1].port]})
        self.assertEqual(r.status, 200, r.body)
        peers = self.info(leader)["peers"]
        self.assertIn(":%d" % others[0].port, peers)
        self.assertNotIn(":%d" % others[1].port, peers)
        self.assertPutOk(leader, "after-joint", "w")

    def test_members_on_follower_redirects(self):
        leader = self.leader()
        follower = next(n for n in self.members if n is not leader)
        r = self.post(follower, "/cluster/members", {"remove": [":%d" % follower.port]})
        self.assertEqual(r.status, 307)
        self.assertEqual(r.header("Location"), "http://127.0.0.1:%d/cluster/members" % leader.port)

    def test_members_malformed_body_is_400(self):
        leader = self.leader()
        self.assertEqual(self.post(leader, "/cluster/members", {"add": "x"}).status, 400)
        self.assertEqual(self.post(leader, "/cluster/members", {}).status, 400)
        self.assertEqual(leader.request("GET", "/cluster/members").status, 405)

    def test_transfer_leadership_to_a_named_voter(self):
        leader = self.leader()
        target = next(n for n in self.members if n is not leader)
        r = self.post(leader, "/cluster/transfer-leadership", {"to": ":%d" % target.port})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.info(target)["role"], "leader")
        self.assertPutOk(target, "after-transfer", "v")

    def test_transfer_leadership_without_target(self):
        leader = self.leader()
        r = self.post(leader, "/cluster/transfer-leadership", None)
        self.assertEqual(r.status, 200, r.body)
        wait_until(lambda: self.leader() is not None and self.leader() is not leader, 5,
                   what="another leader")

    def test_leave_removes_this_node(self):
        leader = self.leader()
        follower = next(n for n in self.members if n is not leader)
        r = self.post(follower, "/cluster/leave", None)
        self.assertEqual(r.status, 200, r.body)
        self.assertNotIn(":%d" % follower.port, self.info(leader)["peers"])
        self.assertPutOk(leader, "after-leave", "v")

    def test_push_takes_in_a_lone_node_without_data(self):
        leader = self.leader()
        self.assertPutOk(leader, "cluster-key", "from the cluster")
        lone = self.start_node()  # a one-member cluster of its own, no data
        r = self.post(leader, "/cluster/members", {"add": [":%d" % lone.port]})
        self.assertEqual(r.status, 200, r.body)
        self.assertIn(":%d" % lone.port, self.info(self.leader())["peers"])
        wait_until(lambda: lone.get("cluster-key", "?consistency=stale").status == 200, 10,
                   what="the cluster's data on the pushed node")
        i = self.info(lone)
        self.assertEqual(i["role"], "follower")
        self.assertIn(":%d" % self.members[0].port, i["peers"])
        self.assertIn("discarding bootstrap state", lone.stderr_text())

    def test_pull_join_of_a_lone_node_without_data(self):
        lone = self.start_node()
        r = self.post(lone, "/cluster/join", {"leader": ":%d" % self.members[1].port})
        self.assertEqual(r.status, 200, r.body)
        wait_until(lambda: ":%d" % lone.port in (self.info(self.leader()) or {}).get("peers", []),
                   10, what="the pulled node among the voters")
        self.assertPutOk(self.leader(), "after-pull", "v")
        wait_until(lambda: lone.get("after-pull", "?consistency=stale").status == 200, 10,
                   what="new writes on the pulled node")

    def test_push_of_a_node_with_data_of_its_own_is_409(self):
        leader = self.leader()
        lone = self.start_node()
        self.assertPutOk(lone, "mine", "data")
        r = self.post(leader, "/cluster/members", {"add": [":%d" % lone.port]})
        self.assertEqual(r.status, 409)
        self.assertNotIn(":%d" % lone.port, self.info(leader)["peers"])
        self.assertNotIn(":%d" % lone.port, self.info(leader)["learners"])
        # Its own cluster is untouched.
        self.assertValue(lone, "mine", "data")
        self.assertEqual(self.info(lone)["role"], "leader")

    def test_join_refused_for_a_node_with_data(self):
        lone = self.start_node()
        self.assertPutOk(lone, "mine", "data")
        r = self.post(lone, "/cluster/join", {"leader": ":%d" % self.members[0].port})
        self.assertEqual(r.status, 409)


if __name__ == "__main__":
    unittest.main()
