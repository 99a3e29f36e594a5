"""SIGTERM on a cluster leader (API.md §6): the leader finishes its requests
and hands leadership over before it exits, so the cluster has a new leader
long before an election timeout would have elected one."""

import json
import signal
import time
import unittest

from kvdtest import KvdTestCase, free_port, wait_until


class HandoverTest(KvdTestCase):
    def start_cluster(self, size=3):
        ports = [free_port() for _ in range(size)]
        peers = ",".join(":%d" % p for p in ports)
        # A long election timeout: only a handover can produce a leader quickly.
        nodes = [self.new_node(port=p, args=["--peers", peers, "--election-timeout-ms", "3000-4000"])
                 for p in ports]
        for n in nodes:
            n.start(wait=False)
        for n in nodes:
            n.wait_ready()
        return nodes

    def info(self, node):
        r = node.request("GET", "/cluster/info")
        return json.loads(r.body) if r.status == 200 else None

    def leader(self, nodes):
        for n in nodes:
            if n.running():
                i = self.info(n)
                if i and i["role"] == "leader":
                    return n, i["term"]
        return None, 0

    def test_sigterm_leader_hands_over_before_exit(self):
        nodes = self.start_cluster()
        wait_until(lambda: self.leader(nodes)[0] is not None, 15, what="a first leader")
        old, term = self.leader(nodes)
        self.assertPutOk(old, "before", "v")
        t0 = time.monotonic()
        old.signal(signal.SIGTERM)
        self.assertEqual(old.wait_exit(5), 0)
        rest = [n for n in nodes if n is not old]
        wait_until(lambda: self.leader(rest)[0] is not None, 2.5, interval=0.02,
                   what="a new leader well within the 3 s election timeout")
        new, new_term = self.leader(rest)
        self.assertLess(time.monotonic() - t0, 2.9)
        self.assertGreater(new_term, term)
        self.assertIn("handing leadership over", old.stderr_text())
        self.assertValue(new, "before", "v")
        self.assertPutOk(new, "after", "w")


if __name__ == "__main__":
    unittest.main()
