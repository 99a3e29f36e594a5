"""Offline tools (API.md §8): kvdump, kvload and kvbench against real nodes
and data directories. The tools are found next to KVD_BIN (build/kvd ->
build/tools/kvdump, ...)."""

import json
import os
import re
import shutil
import subprocess
import unittest

from kvdtest import KVD_BIN, KvdTestCase, free_port, wait_until

TOOLS_DIR = os.path.join(os.path.dirname(os.path.abspath(KVD_BIN)), "tools")
LZ4_MAGIC = b"\x04\x22\x4d\x18"
TOOL_TIMEOUT = 60.0  # seconds one tool run may take

# Values are stored and returned byte for byte: spaces, tabs, newlines, emoji,
# JSON's special characters, a long one.
DATA = {
    "plain": "v",
    "spaces": "  leading and trailing  ",
    "tabs": "a\tb\t\tc",
    "newlines": "line 1\nline 2\r\nline 3\n",
    "emoji": "snow \u2603 party \U0001F389 family \U0001F468\u200D\U0001F469\u200D\U0001F467",
    "json.chars": "quote \" backslash \\ slash / brace { } [ ]",
    "Mixed_Case-key.1:2": "caf\u00e9 \u4e2d\u6587 \u0394",
    "long": "0123456789abcdef" * 4096,
}


def tool(name):
    return os.path.join(TOOLS_DIR, name)


def run_tool(name, args, stdin=None, timeout=TOOL_TIMEOUT):
    """Runs tools/<name> to completion. stdin: bytes or None (then empty).
    Returns (returncode, stdout bytes, stderr text)."""
    p = subprocess.run([tool(name)] + list(args), input=stdin if stdin is not None else b"",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def parse_jsonl(data):
    """List of (key, value) from JSON Lines bytes; every line must be an
    object with exactly "key", "value" and "revision" (an integer >= 1)."""
    return [(k, v) for k, v, _ in parse_jsonl_revisions(data)]


def parse_jsonl_revisions(data):
    """List of (key, value, revision) from kvdump's JSON Lines."""
    out = []
    for line in data.decode("utf-8").splitlines():
        obj = json.loads(line)
        assert set(obj) == {"key", "value", "revision"}, line
        assert isinstance(obj["revision"], int) and obj["revision"] >= 1, line
        out.append((obj["key"], obj["value"], obj["revision"]))
    return out


def jsonl(data, ensure_ascii=False):
    return "".join(json.dumps({"key": k, "value": v}, ensure_ascii=ensure_ascii) + "\n"
                   for k, v in data.items()).encode("utf-8")


class ToolsTest(KvdTestCase):
    def setUp(self):
        super().setUp()
        for name in ("kvdump", "kvload", "kvbench"):
            if not os.access(tool(name), os.X_OK):
                self.fail("%s not found at %s (build first)" % (name, tool(name)))

    def path(self, name):
        return os.path.join(self.tmp, name)

    def filled_node(self, data=DATA, **kw):
        """A node holding data (and a deleted key), stopped."""
        n = self.start_node(**kw)
        for k, v in data.items():
            self.assertPutOk(n, k, v)
        self.assertPutOk(n, "deleted", "x")
        self.assertEqual(n.delete("deleted").status, 200)
        self.assertEqual(n.stop(), 0)
        return n

    def assertOk(self, result, what=""):
        rc, _out, err = result
        self.assertEqual(rc, 0, "%s failed: %s" % (what, err))

    def assertOneLineError(self, result, status=None, pattern=None):
        rc, _out, err = result
        if status is None:
            self.assertNotEqual(rc, 0, err)
        else:
            self.assertEqual(rc, status, err)
        self.assertEqual(len(err.strip().splitlines()), 1, repr(err))
        if pattern is not None:
            self.assertRegex(err, pattern)

    def assertServes(self, node, data):
        for k, v in data.items():
            self.assertValue(node, k, v)

    def dump_jsonl(self, data_dir):
        result = run_tool("kvdump", ["--data-dir", data_dir])
        self.assertOk(result, "kvdump")
        return result[1]

    def load(self, data_dir, args=(), stdin=None):
        result = run_tool("kvload", ["--data-dir", data_dir] + list(args), stdin=stdin)
        self.assertOk(result, "kvload")
        return result

    # ---- kvdump ---------------------------------------------------------------

    def test_dump_stopped_node_in_both_formats(self):
        n = self.filled_node()
        out = self.dump_jsonl(n.data_dir)
        records = parse_jsonl(out)
        self.assertEqual(dict(records), DATA)
        keys = [k.encode() for k, _ in records]
        self.assertEqual(keys, sorted(keys), "keys in stored (bytewise) order")
        # -o FILE: the same bytes, no temporary file left.
        self.assertOk(run_tool("kvdump", ["--data-dir", n.data_dir, "-o", self.path("d.jsonl")]))
        with open(self.path("d.jsonl"), "rb") as f:
            self.assertEqual(f.read(), out)
        self.assertFalse(os.path.exists(self.path("d.jsonl.tmp")))
        # Snapshot format: an LZ4 frame; stdout and -o give the same bytes.
        rc, snap, err = run_tool("kvdump", ["--data-dir", n.data_dir, "--format", "snapshot"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(snap[:4], LZ4_MAGIC)
        self.assertOk(run_tool("kvdump", ["--data-dir", n.data_dir, "--format=snapshot",
                                          "-o", self.path("d.snap")]))
        with open(self.path("d.snap"), "rb") as f:
            self.assertEqual(f.read(), snap)
        # Its records are the data: load it and dump as JSON Lines.
        self.load(self.path("from-snap"), ["-i", self.path("d.snap")])
        self.assertEqual(self.dump_jsonl(self.path("from-snap")), out)

    def test_dump_gives_each_key_the_index_of_its_last_write(self):
        n = self.start_node()
        self.assertPutOk(n, "a", "1")
        self.assertPutOk(n, "b", "2")
        self.assertPutOk(n, "a", "3")
        log = json.loads(n.request("GET", "/log").body)
        index = {}
        for e in log["entries"]:
            m = re.match(r"PUT (\S+) ", e["command"])
            if m:
                index[m.group(1)] = e["index"]  # the last write wins
        self.assertEqual(n.stop(), 0)
        got = parse_jsonl_revisions(self.dump_jsonl(n.data_dir))
        self.assertEqual(got, [("a", "3", index["a"]), ("b", "2", index["b"])])
        self.assertGreater(index["a"], index["b"])

    def test_load_keeps_revisions_and_reads_dumps_without_them(self):
        lines = (b'{"key": "x", "value": "1", "revision": 17}\n'
                 b'{"key": "y", "value": "2", "revision": 5}\n')
        self.load(self.path("with"), stdin=lines)
        self.assertEqual(parse_jsonl_revisions(self.dump_jsonl(self.path("with"))),
                         [("x", "1", 17), ("y", "2", 5)])
        # A dump of an earlier release (no "revision"): every key gets 1.
        self.load(self.path("without"), stdin=jsonl({"p": "q", "r": "s"}))
        self.assertEqual(parse_jsonl_revisions(self.dump_jsonl(self.path("without"))),
                         [("p", "q", 1), ("r", "s", 1)])
        # The loaded store's revision covers its keys: a node started on it
        # writes above 17.
        port = free_port()
        self.load(self.path("node"), ["--id", ":%d" % port], stdin=lines)
        n = self.start_node(port=port, data_dir=self.path("node"))
        self.assertPutOk(n, "z", "after")
        self.assertEqual(n.stop(), 0)
        got = dict((k, r) for k, _v, r in parse_jsonl_revisions(self.dump_jsonl(n.data_dir)))
        self.assertGreater(got["z"], 17)
        self.assertEqual(got["x"], 17)

    def test_dump_of_an_empty_node_is_empty(self):
        n = self.start_node()
        self.assertEqual(n.stop(), 0)
        self.assertEqual(self.dump_jsonl(n.data_dir), b"")

    def test_dump_refuses_a_running_node(self):
        n = self.start_node()
        self.assertPutOk(n, "k", "v")
        for fmt in ("jsonl", "snapshot"):
            result = run_tool("kvdump", ["--data-dir", n.data_dir, "--format", fmt,
                                         "-o", self.path("out")])
            self.assertOneLineError(result, pattern="running node")
            self.assertEqual(result[1], b"")
            self.assertFalse(os.path.exists(self.path("out")))
        self.assertValue(n, "k", "v")  # the node is untouched

    def test_dump_refuses_a_directory_that_is_not_a_node(self):
        os.mkdir(self.path("empty"))
        self.assertOneLineError(run_tool("kvdump", ["--data-dir", self.path("empty")]), 1)
        self.assertOneLineError(run_tool("kvdump", ["--data-dir", self.path("missing")]), 1)
        self.assertFalse(os.path.exists(self.path("missing")))

    def lost_applies(self, second_phase):
        """A stopped node whose LevelDB lost every apply of second_phase(n)
        (an older copy of D/kv put back after a SIGKILL): the log holds
        entries the state machine never saw. Returns the node."""
        n = self.start_node(args=["--snapshot-threshold", "100000"])
        for i in range(20):
            self.assertPutOk(n, "a%d" % i, "first %d" % i)
        self.assertEqual(n.stop(), 0)
        kv = os.path.join(n.data_dir, "kv")
        shutil.copytree(kv, self.path("kv-old"))
        n.start()
        second_phase(n)
        n.kill()
        shutil.rmtree(kv)
        shutil.copytree(self.path("kv-old"), kv)
        return n

    def assertDumpReplaysTheLog(self, n, expected):
        """kvdump includes the unapplied tail, in both formats, and says
        nothing about left-out entries; the node, started, agrees."""
        rc, out, err = run_tool("kvdump", ["--data-dir", n.data_dir])
        self.assertEqual(rc, 0, err)
        self.assertNotIn("not included", err)
        records = parse_jsonl(out)
        self.assertEqual(dict(records), expected)
        self.assertEqual([k for k, _ in records], sorted(k for k, _ in records))
        rc, snap, err = run_tool("kvdump", ["--data-dir", n.data_dir, "--format", "snapshot"])
        self.assertEqual(rc, 0, err)
        self.load(self.path("from-replay"), ["--id", ":%d" % n.port], stdin=snap)
        self.assertEqual(self.dump_jsonl(self.path("from-replay")), out)
        n.start()
        self.assertServes(n, expected)
        self.assertEqual(n.stop(), 0)
        self.assertEqual(self.dump_jsonl(n.data_dir), out)

    def test_dump_replays_committed_entries_the_state_machine_lost(self):
        def second(n):
            for i in range(20, 40):
                self.assertPutOk(n, "a%d" % i, "second %d" % i)
            for i in range(0, 5):
                self.assertEqual(n.delete("a%d" % i).status, 200)
            self.assertPutOk(n, "a10", "over\twritten")
            self.assertPutOk(n, "a10", "overwritten twice \U0001F389")
            self.assertPutOk(n, "0-first", "sorts first")
        n = self.lost_applies(second)
        expected = {"a%d" % i: "first %d" % i for i in range(5, 20)}
        expected.update({"a%d" % i: "second %d" % i for i in range(20, 40)})
        expected["a10"] = "overwritten twice \U0001F389"
        expected["0-first"] = "sorts first"
        self.assertDumpReplaysTheLog(n, expected)

    def test_dump_replays_a_clear_in_the_lost_tail(self):
        def second(n):
            self.assertPutOk(n, "gone", "1")
            self.assertEqual(n.request("DELETE", "/clear").status, 200)
            self.assertPutOk(n, "a3", "after clear")
            self.assertPutOk(n, "z", "last")
        n = self.lost_applies(second)
        self.assertDumpReplaysTheLog(n, {"a3": "after clear", "z": "last"})

    # ---- kvload ---------------------------------------------------------------

    def test_load_jsonl_then_a_node_serves_exactly_the_data(self):
        port = free_port()
        d = self.path("loaded")
        rc, _out, err = self.load(d, ["-i", self.write("in.jsonl", jsonl(DATA)),
                                      "--id", ":%d" % port])
        self.assertIn("--port %d" % port, err)
        n = self.start_node(port=port, data_dir=d)
        self.assertServes(n, DATA)
        self.assertEqual(n.get("deleted").status, 404)
        self.assertEqual(n.get("never-written").status, 404)
        # A working single-node cluster: writes, deletes, restart keeps all.
        self.assertPutOk(n, "after", "load")
        self.assertEqual(n.delete("plain").status, 200)
        self.assertEqual(n.stop(), 0)
        n.start()
        expected = dict(DATA, after="load")
        del expected["plain"]
        self.assertServes(n, expected)
        self.assertEqual(n.get("plain").status, 404)
        self.assertEqual(n.stop(), 0)
        self.assertEqual(dict(parse_jsonl(self.dump_jsonl(d))), expected)

    def test_load_from_stdin_in_both_formats(self):
        n = self.filled_node()
        snap = run_tool("kvdump", ["--data-dir", n.data_dir, "--format", "snapshot"])[1]
        self.load(self.path("a"), stdin=jsonl(DATA, ensure_ascii=True))
        self.assertEqual(dict(parse_jsonl(self.dump_jsonl(self.path("a")))), DATA)
        self.load(self.path("b"), stdin=snap)
        self.assertEqual(dict(parse_jsonl(self.dump_jsonl(self.path("b")))), DATA)

    def test_load_without_id_is_adopted_by_a_node_on_any_port(self):
        d = self.path("d")
        rc, _out, err = self.load(d, stdin=jsonl(DATA))
        self.assertIn("start it with: kvd --working-dir", err)
        n = self.start_node(data_dir=d)  # a free port: not the id in the dump
        for k, v in DATA.items():
            self.assertValue(n, k, v)
        self.assertPutOk(n, "new", "write")
        self.assertIn("adopted the state loaded by kvload", n.stderr_text())
        self.assertEqual(n.stop(), 0)
        n.start()
        self.assertValue(n, "new", "write")
        info = json.loads(n.request("GET", "/cluster/info").body)
        self.assertEqual(info["role"], "leader")
        self.assertEqual(info["peers"], [":%d" % n.port])

    def test_load_refuses_a_non_empty_directory_without_force(self):
        d = self.path("d")
        os.mkdir(d)
        with open(os.path.join(d, "keep-me"), "w") as f:
            f.write("x")
        self.assertOneLineError(run_tool("kvload", ["--data-dir", d], stdin=jsonl(DATA)), 1,
                                "not empty")
        self.assertTrue(os.path.exists(os.path.join(d, "keep-me")))
        # A loaded directory is not empty either; --force replaces it.
        port = free_port()
        self.load(self.path("n"), ["--id", ":%d" % port], stdin=jsonl({"old": "1"}))
        self.assertOneLineError(run_tool("kvload", ["--data-dir", self.path("n")],
                                         stdin=jsonl(DATA)), 1, "--force")
        self.load(self.path("n"), ["--force", "--id", ":%d" % port], stdin=jsonl(DATA))
        n = self.start_node(port=port, data_dir=self.path("n"))
        self.assertServes(n, DATA)
        self.assertEqual(n.get("old").status, 404)
        # A running node's directory is refused even with --force.
        self.assertOneLineError(run_tool("kvload", ["--data-dir", self.path("n"), "--force"],
                                         stdin=jsonl({"x": "y"})), 1, "running node")
        self.assertServes(n, DATA)

    def test_load_rejects_bad_input_with_one_line(self):
        cases = [
            (b'{"key": "k", "value": "v"}\nnot json\n', "line 2"),
            (b'{"key": "k"}\n', "line 1"),
            (b'{"key": "bad key!", "value": "v"}\n', "invalid key"),
            (b'{"key": "k", "value": ""}\n', "empty"),
            (b'["k", "v"]\n', "line 1"),
            (b'{"key": "k", "value": "v", "revision": 0}\n', "revision must be an integer >= 1"),
            (b'{"key": "k", "value": "v", "revision": "3"}\n', "revision must be"),
            (b'{"key": "k", "value": "v", "rev": 3}\n', "line 1"),
        ]
        for i, (data, pattern) in enumerate(cases):
            with self.subTest(data=data):
                self.assertOneLineError(run_tool("kvload", ["--data-dir", self.path("bad%d" % i)],
                                                 stdin=data), 1, pattern)
        n = self.filled_node()
        snap = run_tool("kvdump", ["--data-dir", n.data_dir, "--format", "snapshot"])[1]
        self.assertOneLineError(run_tool("kvload", ["--data-dir", self.path("trunc")],
                                         stdin=snap[:len(snap) // 2]), 1)
        self.assertOneLineError(run_tool("kvload", ["--data-dir", self.path("x"), "-i",
                                                    self.path("no-such-file")]), 1)
        self.assertFalse(os.path.exists(self.path("x")))

    def test_snapshot_round_trip_is_identical(self):
        n = self.filled_node()
        first = self.path("first.snap")
        self.assertOk(run_tool("kvdump", ["--data-dir", n.data_dir, "--format", "snapshot",
                                          "-o", first]))
        self.load(self.path("copy"), ["-i", first])
        rc, second, err = run_tool("kvdump", ["--data-dir", self.path("copy"), "--format",
                                              "snapshot"])
        self.assertEqual(rc, 0, err)
        with open(first, "rb") as f:
            self.assertEqual(second, f.read())
        # The copy keeps the lone member's id: the same port serves it.
        m = self.start_node(port=n.port, data_dir=self.path("copy"))
        self.assertServes(m, DATA)

    def test_a_loaded_node_can_grow_its_cluster(self):
        """The loaded records are in no log entry: a joining node must get
        them from the snapshot that kvload wrote."""
        port = free_port()
        self.load(self.path("seed"), ["--id", ":%d" % port], stdin=jsonl(DATA))
        a = self.start_node(port=port, data_dir=self.path("seed"))
        b = self.new_node(args=["--join", ":%d" % port])
        b.start()
        wait_until(lambda: b.get("long", "?consistency=stale").status == 200, 20,
                   what="the loaded data on the joined node")
        for k, v in DATA.items():
            r = b.get(k, "?consistency=stale")
            self.assertEqual((r.status, r.body), (200, v.encode()), k)
        self.assertPutOk(a, "after-join", "1")

    # ---- flags ----------------------------------------------------------------

    def test_bad_flags_exit_2_with_one_line(self):
        d = self.path("d")
        cases = [
            ("kvdump", ["--data-dir", d, "--bogus"]),
            ("kvdump", []),
            ("kvdump", ["--data-dir", d, "--format", "xml"]),
            ("kvdump", ["--data-dir"]),
            ("kvload", ["--data-dir", d, "--bogus"]),
            ("kvload", ["-i", "x"]),
            ("kvload", ["--data-dir", d, "--id", "no-port"]),
            ("kvbench", ["--bogus"]),
            ("kvbench", ["--op", "delete"]),
            ("kvbench", ["--connections", "0"]),
            ("kvbench", ["--duration", "soon"]),
            ("kvbench", ["--keys", "-5"]),
            ("kvbench", ["--value-bytes", "0"]),
            ("kvbench", ["--url", "ftp://x"]),
            ("kvbench", ["--requests", "many"]),
        ]
        for name, args in cases:
            with self.subTest(tool=name, args=args):
                self.assertOneLineError(run_tool(name, args, timeout=10), 2)
        self.assertFalse(os.path.exists(d))

    def test_flags_are_read_one_way_in_every_tool(self):
        """Every tool reads its flags the same way (getopt_long): --help, both
        "--flag value" and "--flag=value", the same line for an unknown flag,
        a flag without its value and a stray argument."""
        d = self.path("d")
        for name in ("kvdump", "kvload", "kvbench"):
            with self.subTest(tool=name):
                rc, out, err = run_tool(name, ["--help"], timeout=10)
                self.assertEqual((rc, err), (0, ""))
                self.assertTrue(out.startswith(("usage: %s " % name).encode()), out)
                self.assertOneLineError(run_tool(name, ["--bogus"], timeout=10), 2,
                                        "^%s: unknown flag '--bogus' \\(see --help\\)$" % name)
                self.assertOneLineError(run_tool(name, ["--bogus=1"], timeout=10), 2,
                                        "^%s: unknown flag '--bogus=1' \\(see --help\\)$" % name)
        for name, flag in (("kvdump", "--data-dir"), ("kvload", "--data-dir"),
                           ("kvbench", "--url")):
            with self.subTest(tool=name, flag=flag):
                self.assertOneLineError(run_tool(name, [flag], timeout=10), 2,
                                        "^%s: flag %s needs a value$" % (name, flag))
        for name, args in (("kvdump", ["--data-dir", d, "stray"]),
                           ("kvload", ["--data-dir", d, "stray"])):
            with self.subTest(tool=name, args=args):
                self.assertOneLineError(run_tool(name, args, timeout=10), 2,
                                        "^%s: unknown flag 'stray' \\(see --help\\)$" % name)
        for name, args, pattern in (
                ("kvdump", ["--data-dir=" + d, "--format=xml"], "^kvdump: bad --format 'xml'"),
                ("kvload", ["--data-dir=" + d, "--id=no-port"], "^kvload: bad --id 'no-port'"),
                ("kvbench", ["--url=ftp://x"], "^kvbench: bad --url 'ftp://x'")):
            with self.subTest(tool=name, args=args):
                self.assertOneLineError(run_tool(name, args, timeout=10), 2, pattern)
        self.assertFalse(os.path.exists(d))

    # ---- kvbench --------------------------------------------------------------

    def test_kvbench_reports_rate_statuses_and_latency(self):
        n = self.start_node()
        rc, out, err = run_tool("kvbench", ["--url", "http://127.0.0.1:%d" % n.port,
                                            "--duration", "1s", "--connections", "8",
                                            "--keys", "100", "--value-bytes", "10"], timeout=30)
        self.assertEqual(rc, 0, err)
        text = out.decode()
        m = re.search(r"^requests/s: ([0-9.]+)$", text, re.M)
        self.assertIsNotNone(m, text)
        self.assertGreater(float(m.group(1)), 0)
        self.assertRegex(text, r"(?m)^status 200: [1-9][0-9]*$")
        self.assertRegex(text, r"(?m)^status 307: 0$")
        self.assertRegex(text, r"(?m)^status 503: 0$")
        self.assertRegex(text, r"(?m)^latency ms: p50 [0-9.]+ p90 [0-9.]+ p99 [0-9.]+ "
                               r"p999 [0-9.]+ max [0-9.]+$")
        # The puts landed: keys kvbench-0..99 hold 10-byte values.
        found = [k for k in range(100) if n.get("kvbench-%d" % k).status == 200]
        self.assertTrue(found)
        self.assertEqual(len(n.get("kvbench-%d" % found[0]).body), 10)
        # --requests N: exactly N requests, mixed.
        rc, out, err = run_tool("kvbench", ["--url", "http://127.0.0.1:%d" % n.port,
                                            "--op", "mixed", "--requests", "500"], timeout=30)
        self.assertEqual(rc, 0, err)
        self.assertRegex(out.decode(), r"(?m)^requests: 500 in ")

    def test_kvbench_without_a_server_fails(self):
        port = free_port()
        result = run_tool("kvbench", ["--url", "http://127.0.0.1:%d" % port, "--duration",
                                      "300ms", "--connections", "2"], timeout=30)
        self.assertOneLineError(result, 1, "no request")

    def write(self, name, data):
        p = self.path(name)
        with open(p, "wb") as f:
            f.write(data)
        return p


if __name__ == "__main__":
    unittest.main()
