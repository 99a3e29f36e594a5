"""test_linearizable.py: a history of concurrent clients doing PUT, GET and
DELETE on a few keys of a real 5-node cluster, while a nemesis SIGKILLs,
restarts, crashes all at once and partitions (POST /cluster/partition) nodes
at random, must be linearizable (API.md §2 Consistency). The history is
checked by lincheck (tests/sim); see cluster.check_linearizable for the
outcome rules (503 no leader = not applied, other 503s and timeouts =
possibly applied)."""

import unittest

from cluster import DURATION_S, ClusterCase, check_linearizable


class TestLinearizable(ClusterCase):
    def test_random_ops_under_kills_and_partitions_are_linearizable(self):
        c = self.make_cluster(5)
        check_linearizable(self, c)

    def test_linearizable_with_fast_elections_and_frequent_snapshots(self):
        # Short timeouts make leadership change often; a low snapshot
        # threshold makes restarted and cut-off nodes catch up by snapshot.
        c = self.make_cluster(5, args=["--election-timeout-ms", "300-600", "--heartbeat-ms", "50",
                                       "--snapshot-threshold", "200"])
        check_linearizable(self, c, duration=min(15.0, DURATION_S))


if __name__ == "__main__":
    unittest.main()
