"""GET /metrics (API.md §9): Prometheus text with request counters by route
and status, latency histograms, term, commit and applied index, fsync
latency, log and snapshot sizes, elections."""

import re
import unittest

from kvdtest import KvdTestCase


def parse(text):
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


class MetricsTest(KvdTestCase):
    def metrics(self, node):
        r = node.request("GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.content_type.startswith("text/plain"))
        return parse(r.body.decode())

    def test_metrics_follow_requests_and_raft_state(self):
        n = self.start_node()
        before = self.metrics(n)
        for i in range(5):
            self.assertPutOk(n, "m%d" % i, "v")
        n.get("m0")
        n.get("absent")
        after = self.metrics(n)
        put = 'kvd_http_requests_total{route="kv",method="PUT",status="200"}'
        self.assertEqual(after.get(put, 0) - before.get(put, 0), 5)
        self.assertEqual(after['kvd_http_requests_total{route="kv",method="GET",status="404"}'], 1)
        self.assertGreaterEqual(after["kvd_raft_commit_index"], before["kvd_raft_commit_index"] + 5)
        self.assertEqual(after["kvd_raft_applied_index"], after["kvd_raft_commit_index"])
        self.assertEqual(after["kvd_raft_leader"], 1)
        self.assertGreaterEqual(after["kvd_raft_term"], 1)
        self.assertGreaterEqual(after["kvd_elections_won_total"], 1)
        self.assertGreater(after["kvd_fsync_duration_seconds_count"], before["kvd_fsync_duration_seconds_count"])
        self.assertGreater(after["kvd_log_bytes"], 0)
        self.assertGreaterEqual(after['kvd_http_request_duration_seconds_count{route="kv"}'], 7)

    def test_snapshot_size_and_index_exported(self):
        n = self.start_node()
        self.assertPutOk(n, "s", "v")
        r = n.request("POST", "/log/snapshot")
        self.assertEqual(r.status, 200)
        m = self.metrics(n)
        self.assertGreater(m["kvd_snapshot_bytes"], 0)
        self.assertGreaterEqual(m["kvd_snapshot_index"], 2)

    def test_metrics_is_get_only(self):
        n = self.start_node()
        r = n.request("POST", "/metrics")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.header("Allow"), "GET")


if __name__ == "__main__":
    unittest.main()
