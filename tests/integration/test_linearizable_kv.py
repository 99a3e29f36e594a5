"""test_linearizable_kv.py: concurrent clients on a real 3-node cluster
issue PUT, GET, DELETE, If-Match compare-and-set PUTs, If-None-Match
creates, If-Match DELETEs and POST /txn transactions on 3 keys, recording
revisions (ETag, a txn's revision and its gets' results), while the nemesis
of test_linearizable.py SIGKILLs (the leader half of the time), restarts,
crashes all at once and partitions nodes. lincheck must find the history
linearizable: conditions checked atomically at apply time, transactions
applied atomically, revisions in log order (API.md §10, §12). Outcome rules
in linkv.py."""

import unittest

from cluster import DURATION_S, ClusterCase
from linkv import check_history, run_clients


class TestLinearizableKv(ClusterCase):
    def test_conditional_writes_and_txns_under_kills_and_partitions(self):
        c = self.make_cluster(3)
        history, nemesis, seed = run_clients(self, c, DURATION_S)
        check_history(self, history, nemesis, seed)

    def test_with_fast_elections_and_frequent_snapshots(self):
        # Short timeouts make leadership change often; a low snapshot
        # threshold makes restarted and cut-off nodes catch up by snapshot
        # (revisions must survive the snapshot).
        c = self.make_cluster(3, args=["--election-timeout-ms", "300-600", "--heartbeat-ms", "50",
                                       "--snapshot-threshold", "200"])
        history, nemesis, seed = run_clients(self, c, min(15.0, DURATION_S))
        check_history(self, history, nemesis, seed)


if __name__ == "__main__":
    unittest.main()
