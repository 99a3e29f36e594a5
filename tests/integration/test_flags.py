"""Command-line flags and environment variables (API.md §1)."""

import json
import os
import unittest

from kvdtest import KvdTestCase, free_port, run_kvd


class FlagsTest(KvdTestCase):
    def _assert_exit_2(self, args, env=None):
        """kvd with args exits with status 2 and exactly one non-empty stderr
        line, without serving."""
        args = list(args)
        if not any(a.startswith("--working-dir") for a in args):
            args += ["--working-dir", os.path.join(self.tmp, "d")]
        rc, out, err = run_kvd(args, env=env, cwd=self.tmp)
        self.assertEqual(rc, 2, "kvd %s: status %s, stderr %r" % (" ".join(args), rc, err))
        lines = [l for l in err.splitlines()]
        self.assertEqual(len(lines), 1, "kvd %s: expected one stderr line, got %r" % (" ".join(args), err))
        self.assertTrue(lines[0].strip(), "empty stderr line")
        return lines[0]

    def test_unknown_flag_exits_2_with_one_line(self):
        line = self._assert_exit_2(["--port", str(free_port()), "--no-such-flag"])
        self.assertIn("no-such-flag", line)

    def test_unknown_positional_argument_exits_2(self):
        self._assert_exit_2(["--port", str(free_port()), "stray"])

    def test_malformed_port_exits_2(self):
        for v in ["abc", "-1", "65536", "80x", ""]:
            with self.subTest(port=v):
                self._assert_exit_2(["--port", v])

    def test_flag_missing_its_value_exits_2(self):
        self._assert_exit_2(["--working-dir", os.path.join(self.tmp, "d"), "--port"])

    def test_malformed_election_timeout_exits_2(self):
        for v in ["5", "abc", "1000-500", "a-b", "100-"]:
            with self.subTest(value=v):
                self._assert_exit_2(["--port", str(free_port()), "--election-timeout-ms", v])

    def test_malformed_max_value_bytes_exits_2(self):
        for v in ["-1", "abc", "0", "12k"]:
            with self.subTest(value=v):
                self._assert_exit_2(["--port", str(free_port()), "--max-value-bytes", v])

    def test_malformed_log_level_exits_2(self):
        for v in ["loud", "INFO!", ""]:
            with self.subTest(value=v):
                self._assert_exit_2(["--port", str(free_port()), "--log-level", v])

    def test_malformed_heartbeat_and_snapshot_threshold_exit_2(self):
        for flag, v in [("--heartbeat-ms", "abc"), ("--heartbeat-ms", "-5"),
                        ("--snapshot-threshold", "abc"), ("--snapshot-threshold", "-1")]:
            with self.subTest(flag=flag, value=v):
                self._assert_exit_2(["--port", str(free_port()), flag, v])

    def test_peers_without_entry_for_port_exits_2(self):
        port = free_port()
        others = "127.0.0.1:%d,127.0.0.1:%d" % (port + 1, port + 2)
        self._assert_exit_2(["--port", str(port), "--peers", others])

    def test_help_exits_0(self):
        rc, out, err = run_kvd(["--help"], cwd=self.tmp)
        self.assertEqual(rc, 0, err)
        self.assertIn("--port", out + err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "data")), "--help created ./data")

    def test_port_equals_form(self):
        n = self.new_node(pass_port=False)
        n.args = ["--port=%d" % n.port]
        n.start()
        self.assertPutOk(n, "eq", "form")
        self.assertValue(n, "eq", "form")

    def test_working_dir_equals_form(self):
        d = os.path.join(self.tmp, "eqdir")
        n = self.new_node(pass_data_dir=False, data_dir=d)
        n.args = ["--working-dir=" + d]
        n.start()
        self.assertPutOk(n, "k", "v")
        self.assertTrue(os.path.isdir(os.path.join(d, "raft")), os.listdir(self.tmp))

    def test_data_dir_env_is_used(self):
        d = os.path.join(self.tmp, "from-env")
        n = self.new_node(pass_data_dir=False, data_dir=d, env={"DATA_DIR": d})
        n.start()
        self.assertPutOk(n, "k", "env")
        self.assertTrue(os.path.isdir(d), "DATA_DIR %s not created" % d)
        self.assertTrue(os.path.isdir(os.path.join(d, "raft")), os.listdir(d))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "data")), "./data used instead of DATA_DIR")
        # the data really lives there: a restart on the same DATA_DIR sees it
        n.kill()
        n.start()
        self.assertValue(n, "k", "env")

    def test_working_dir_flag_wins_over_data_dir_env(self):
        env_dir = os.path.join(self.tmp, "env-dir")
        flag_dir = os.path.join(self.tmp, "flag-dir")
        n = self.new_node(data_dir=flag_dir, env={"DATA_DIR": env_dir})
        n.start()
        self.assertPutOk(n, "k", "flag")
        self.assertTrue(os.path.isdir(os.path.join(flag_dir, "raft")))
        self.assertFalse(os.path.exists(env_dir) and os.listdir(env_dir),
                         "DATA_DIR used although --working-dir was given")

    def test_default_data_dir_is_dot_data(self):
        n = self.new_node(pass_data_dir=False)
        n.start()
        self.assertPutOk(n, "k", "v")
        self.assertTrue(os.path.isdir(os.path.join(self.tmp, "data", "raft")), os.listdir(self.tmp))

    def test_default_port_is_port_of_addr(self):
        n = self.new_node(pass_port=False)
        me = "127.0.0.1:%d" % n.port
        n.args = ["--addr", me]
        n.start()
        self.assertPutOk(n, "k", "v")

    def test_default_port_is_port_of_addr_env(self):
        n = self.new_node(pass_port=False)
        me = "127.0.0.1:%d" % n.port
        n.env = {"ADDR": me}
        n.start()
        info = json.loads(n.request("GET", "/cluster/info").body)
        self.assertEqual(info["id"], me)

    def test_addr_flag_wins_over_addr_env(self):
        n = self.new_node()
        flag_id = "127.0.0.1:%d" % n.port
        n.args = ["--addr", flag_id]
        n.env = {"ADDR": "127.0.0.1:%d" % (n.port + 1)}
        n.start()
        info = json.loads(n.request("GET", "/cluster/info").body)
        self.assertEqual(info["id"], flag_id)
        self.assertEqual(info["peers"], [flag_id])

    def test_max_value_bytes_flag_sets_limit(self):
        n = self.new_node(args=["--max-value-bytes", "10"])
        n.start()
        self.assertPutOk(n, "ten", "0123456789")
        self.assertValue(n, "ten", "0123456789")
        self.assertText(n.put("eleven", "0123456789a"), 413, "value too large\n")
        self.assertText(n.get("eleven"), 404, "key not found\n")
        # counted in bytes: 4 emoji are 16 bytes
        self.assertText(n.put("emoji", "\U0001F600" * 4), 413, "value too large\n")
        self.assertPutOk(n, "emoji", "\U0001F600\U0001F600")

    def test_max_value_bytes_flag_raises_limit(self):
        n = self.new_node(args=["--max-value-bytes", "2000000"])
        n.start()
        self.assertPutOk(n, "big", "x" * 2000000)
        self.assertText(n.put("big2", "x" * 2000001), 413, "value too large\n")

    def test_log_levels_accepted(self):
        for level in ["debug", "info", "warn", "error"]:
            with self.subTest(level=level):
                n = self.new_node(args=["--log-level", level])
                n.start()
                self.assertPutOk(n, "k", level)
                n.kill()

    def test_election_timeout_and_heartbeat_flags_accepted(self):
        n = self.new_node(args=["--election-timeout-ms", "300-600", "--heartbeat-ms", "50",
                                "--snapshot-threshold", "100"])
        n.start()
        self.assertPutOk(n, "k", "v")


if __name__ == "__main__":
    unittest.main()
