"""test_learner_catchup.py: a server that already is a learner is promoted
only once it has caught up (thesis §4.2.1; issue 7, item 6).

A lone node A is cut off from everyone (POST /cluster/partition) and a new
node B starts with --join A. The admin request still reaches A (partitions
block /raft/* only), so A adds B as a learner, which gets nothing and the
change times out (10 election timeouts without progress). --join retries:
the retry must not make the lagging learner a voter, or A alone is no
longer a majority of {A, B} and stops committing. Once healed, B catches up
and is promoted.

Short election timeouts (100-200 ms) keep the catch-up timeout at 2 s. Ports
come from KVD_TEST_PORT_BASE (default 21000) + 0..999.
"""

import os
import time
import unittest

from cluster import ClusterCase, Client, Node, wait_until
from test_snapshot_catchup import ports_in_range

TIMING = ["--election-timeout-ms", "100-200", "--heartbeat-ms", "30"]


class LearnerCatchup(ClusterCase):
    def lone_node(self, extra=()):
        port = ports_in_range(1)[0]
        d = os.path.join(self.tmpdir, "lone-%d" % port)
        n = Node(":%d" % port, "127.0.0.1", port, d, d + ".log",
                 ["--port", str(port), "--working-dir", d] + TIMING + list(extra))
        self.lone.append(n)
        n.start()
        n.wait_ready(15)
        return n

    def setUp(self):
        super().setUp()
        self.lone = []
        self.addCleanup(self._kill_lone)

    def _kill_lone(self):
        for n in self.lone:
            n.kill()
            if self._failed():
                print("\n---- %s ----\n%s" % (n.id, n.log_tail(80)))

    def put(self, node, key, value):
        cl = Client(timeout=10.0)
        try:
            return cl.request(node.host, node.port, "PUT", "/kv/" + key, value, follow=True)
        finally:
            cl.close()

    def test_join_retry_does_not_promote_lagging_learner(self):
        a = self.lone_node()
        wait_until(lambda: (a.try_info() or {}).get("role") == "leader", 10, what="A leading")
        for i in range(20):
            self.assertEqual(self.put(a, "k%d" % i, "v%d" % i).status, 200)
        a.partition([a.id])
        b = self.lone_node(["--join", a.id])
        wait_until(lambda: b.id in (a.try_info() or {}).get("learners", []), 15,
                   what="B added as a learner")
        # The first change times out (about 2 s) and --join retries; give it
        # time for several retries.
        deadline = time.monotonic() + 8.0
        i = 0
        while time.monotonic() < deadline:
            info = a.info()
            self.assertNotIn(b.id, info["peers"], "lagging learner promoted: %r" % info)
            r = self.put(a, "during%d" % i, "x")
            self.assertEqual(r.status, 200, "A stopped committing: %r" % r)
            i += 1
            time.sleep(0.2)
        a.heal()
        wait_until(lambda: sorted((a.try_info() or {}).get("peers", [])) == sorted([a.id, b.id]), 20,
                   what="B promoted once caught up")
        self.assertEqual(self.put(a, "after", "y").status, 200)
        wait_until(lambda: b.stale_get("after") == (200, b"y"), 10, what="B current")
        self.assertEqual(b.stale_get("k19"), (200, b"v19"))


if __name__ == "__main__":
    unittest.main()
