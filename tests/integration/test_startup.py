"""Starting a lone node (API.md §1 Bootstrap, Readiness): the first request
succeeds, the data directory is created, the log's configuration wins over
later flags, and a data directory or port in use is refused."""

import json
import os
import socket
import time
import unittest

from kvdtest import KvdTestCase, RawConn, run_kvd


class StartupTest(KvdTestCase):
    def test_first_request_on_first_connection_succeeds(self):
        # No /health polling: the very first connection that the node accepts
        # carries a PUT, which must succeed (leader before accepting).
        n = self.new_node()
        n.start(wait=False)
        deadline = time.monotonic() + 15
        conn = None
        while conn is None:
            if not n.running():
                self.fail("kvd exited with status %s" % n.proc.returncode)
            if time.monotonic() > deadline:
                self.fail("kvd did not open its port within 15 s")
            try:
                conn = RawConn(n.port, timeout=10)
            except ConnectionRefusedError:
                time.sleep(0.01)
        with conn:
            self.assertText(conn.request("PUT", "/kv/first", "first!"), 200, b"")
        self.assertValue(n, "first", "first!")

    def test_missing_nested_data_directory_is_created(self):
        d = os.path.join(self.tmp, "a", "b", "c")
        n = self.start_node(data_dir=d)
        self.assertPutOk(n, "k", "v")
        self.assertTrue(os.path.isdir(os.path.join(d, "raft")))

    def test_restart_with_other_peers_keeps_log_configuration(self):
        n = self.start_node()
        me = ":%d" % n.port
        self.assertPutOk(n, "k", "before")
        self.assertEqual(n.stop(), 0)
        # a differing --peers is ignored once the data directory is not empty
        n.args = ["--peers", "%s,127.0.0.1:%d" % (me, n.port + 1)]
        n.start()
        self.assertValue(n, "k", "before")
        self.assertPutOk(n, "k", "after")
        info = json.loads(n.request("GET", "/cluster/info").body)
        self.assertEqual(info["role"], "leader", info)
        self.assertEqual(info["peers"], [me], info)

    def test_second_node_on_same_data_directory_is_refused(self):
        n = self.start_node()
        self.assertPutOk(n, "k", "v")
        other = self.new_node(data_dir=n.data_dir)
        other.start(wait=False)
        rc = other.wait_exit(10)
        if rc is None:
            self.fail("a second kvd runs on a data directory that another kvd holds")
        self.assertNotEqual(rc, 0)
        self.assertTrue(n.running())
        self.assertValue(n, "k", "v")

    def test_port_in_use_exits_non_zero(self):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            rc, out, err = run_kvd(["--port", str(port), "--working-dir", os.path.join(self.tmp, "d")],
                                   cwd=self.tmp, timeout=15)
        self.assertNotEqual(rc, 0)
        self.assertTrue(err.strip(), "no message on stderr")

    def test_startup_log_names_id_and_data_dir(self):
        n = self.start_node()
        err = n.stderr_text()
        self.assertIn(":%d" % n.port, err)
        self.assertIn(n.data_dir, err)


if __name__ == "__main__":
    unittest.main()
