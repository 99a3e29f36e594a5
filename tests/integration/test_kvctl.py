"""test_kvctl.py: the command-line client kvctl (API.md §14) against real
3-node kvd clusters: every command, its text and JSON output, exit codes
(0 done, 1 not found / precondition failed, 2 usage, 3 unavailable), 307
following, endpoint rotation, retrying "503 no leader" until --timeout, and
a session while the leader is killed.

kvctl is found next to KVD_BIN (build/kvd -> build/tools/kvctl), or at
$KVCTL_BIN. With KVCTL_SESSION_LOG=FILE, the leader-kill session's commands
and output are written to FILE."""

import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

from cluster import KVD_BIN, ClusterCase, Node, free_ports, http_request, wait_until

KVCTL = os.environ.get("KVCTL_BIN") or os.path.join(os.path.dirname(os.path.abspath(KVD_BIN)), "tools", "kvctl")
RUN_TIMEOUT = 60.0  # seconds one kvctl run may take


def run(args, stdin=None, env_endpoints=None, timeout=RUN_TIMEOUT):
    """Runs kvctl; returns (exit code, stdout text, stderr text)."""
    env = dict(os.environ)
    env.pop("KVCTL_ENDPOINTS", None)
    env.pop("KVCTL_TOKEN", None)
    if env_endpoints is not None:
        env["KVCTL_ENDPOINTS"] = env_endpoints
    p = subprocess.run([KVCTL] + list(args), input=(stdin or "").encode("utf-8"), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, env=env)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def eps(nodes):
    return ",".join("127.0.0.1:%d" % n.port for n in nodes)


class Forwarder:
    """A TCP port forwarder to 127.0.0.1:target (threads), standing in for a
    port mapping: the node is reached at an address that is not its id."""

    def __init__(self, target, drop_answers=False):
        self.target = target
        self.drop_answers = drop_answers  # the node's answer never reaches the client
        self.accepted = 0
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _pipe(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept(self):
        while not self.stop.is_set():
            try:
                a, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            self.accepted += 1
            try:
                b = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                a.close()
                continue
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()
            if self.drop_answers:
                threading.Thread(target=self._drop, args=(b, a), daemon=True).start()
            else:
                threading.Thread(target=self._pipe, args=(b, a), daemon=True).start()

    def _drop(self, b, a):
        """Waits for the node's answer, then closes both sides unanswered."""
        try:
            b.recv(1)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.lsock.close()


class KvctlCase(ClusterCase):
    def setUp(self):
        super().setUp()
        if not os.path.exists(KVCTL):
            self.fail("kvctl not found at %s (set KVCTL_BIN)" % KVCTL)
        self.extra = []
        self.addCleanup(self._kill_extra)

    def _kill_extra(self):
        for n in self.extra:
            n.kill()

    def ok(self, args, stdin=None):
        rc, out, err = run(args, stdin)
        self.assertEqual(rc, 0, "kvctl %s -> %d\nstdout: %s\nstderr: %s" % (args, rc, out, err))
        return out

    def fails(self, args, code, stdin=None, err_has=None):
        rc, out, err = run(args, stdin)
        self.assertEqual(rc, code, "kvctl %s -> %d (wanted %d)\nstdout: %s\nstderr: %s" % (args, rc, code, out, err))
        self.assertEqual(len(err.splitlines()), 1, "one stderr line wanted: %r" % err)
        self.assertTrue(err.startswith("kvctl: "), err)
        if err_has is not None:
            self.assertIn(err_has, err)
        return out, err

    def cluster3(self, args=()):
        c = self.make_cluster(3, args=args)
        leader, _ = c.wait_leader(timeout=15)
        followers = [n for n in c.nodes if n is not leader]
        return c, leader, followers


class TestUsage(KvctlCase):
    """Bad usage: exit 2, one stderr line, nothing on stdout; nothing is
    sent (the endpoint is a closed port, which would give 3)."""

    def test_bad_usage_exit_2(self):
        port = free_ports(1)[0]
        e = ["--endpoints", "127.0.0.1:%d" % port, "--timeout", "1s"]
        cases = [
            [],
            ["frobnicate"],
            ["get"],
            ["get", "a", "b"],
            ["get", "bad key"],
            ["get", "a/b"],
            ["get", "x" * 1025],
            ["put", "k", ""],
            ["put", "k", "v", "extra"],
            ["put", "k", "v", "--if-match", "abc"],
            ["put", "k", "v", "--if-match", "3", "--if-absent"],
            ["put", "k", "v", "--if-match"],
            ["del", "k", "--if-absent"],
            ["get", "k", "--keys-only"],
            ["ls", "a", "b"],
            ["ls", "bad prefix"],
            ["watch", "--from", "x"],
            ["txn"],  # empty stdin: not JSON
            ["members"],
            ["members", "add"],
            ["members", "join", ":1"],
            ["members", "add", "no-port"],
            ["transfer", "a b"],
            ["status", "extra"],
            ["--frob", "status"],
            ["--timeout", "soon", "status"],
            ["--timeout", "0", "status"],
            ["--timeout", "1e3", "status"],
            ["--timeout", "inf", "status"],
            ["--timeout", "1.2.3s", "status"],
            ["--endpoints", "nohostport", "status"],
            ["--endpoints", "http://127.0.0.1:1,https://127.0.0.1:2", "status"],
            ["--endpoints", "127.0.0.1:1,,", "status"],
            ["--endpoints", "", "status"],
            ["--token", "", "status"],
        ]
        for args in cases:
            with self.subTest(args=args):
                rc, out, err = run((e if args[:1] != ["--endpoints"] else ["--timeout", "1s"]) + args)
                self.assertEqual(rc, 2, "kvctl %s -> %d: %r %r" % (args, rc, out, err))
                self.assertEqual(out, "")
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertTrue(err.startswith("kvctl: "), err)
        rc, out, err = run(e + ["txn"], stdin="[1, 2]")
        self.assertEqual((rc, out), (2, ""), err)
        # Well-formed: a decimal timeout, an ETag with its quotes (closed port: 3).
        for args in (["--timeout", "0.5", "get", "a"], ["--timeout", "300ms", "put", "a", "b", "--if-match", '"7"']):
            rc, out, err = run(["--endpoints", "127.0.0.1:%d" % port] + args)
            self.assertEqual(rc, 3, (args, err))

    def test_help(self):
        rc, out, err = run(["--help"])
        self.assertEqual((rc, err), (0, ""))
        for cmd in ("get", "put", "del", "ls", "watch", "txn", "status", "members", "transfer", "snapshot",
                    "leader", "--endpoints", "--token", "--json", "--timeout", "KVCTL_ENDPOINTS"):
            self.assertIn(cmd, out)
        for cmd in ("get", "put", "del", "ls", "watch", "txn", "status", "members", "transfer", "snapshot",
                    "leader"):
            rc, out, err = run([cmd, "--help"])
            self.assertEqual((rc, err), (0, ""), cmd)
            self.assertTrue(out.startswith("usage: kvctl " + cmd), out)
            rc, out2, err = run(["help", cmd])
            self.assertEqual((rc, out2), (0, out))


class TestKeyCommands(KvctlCase):
    def test_get_put_del_through_a_follower(self):
        c, leader, followers = self.cluster3()
        # A follower first: every write and read follows its 307.
        e = ["--endpoints", eps(followers + [leader])]
        out = self.ok(e + ["put", "greeting", "hello world"])
        self.assertRegex(out, r"^OK revision \d+\n$")
        rev = int(out.split()[-1])
        self.assertEqual(self.ok(e + ["get", "greeting"]), "hello world")  # raw, no newline added
        self.assertEqual(json.loads(self.ok(e + ["--json", "get", "greeting"])),
                         {"key": "greeting", "value": "hello world", "revision": rev})
        # Values byte for byte, from stdin ("-" or no VALUE).
        value = "line 1\n\ttab \u2603 \U0001F389 \"q\" \\\n"
        self.ok(e + ["put", "odd", "-"], stdin=value)
        self.assertEqual(self.ok(e + ["get", "odd"]), value)
        self.ok(e + ["put", "odd2"], stdin=value)
        self.assertEqual(self.ok(e + ["get", "odd2"]), value)
        self.ok(e + ["put", "dash", "--", "-starts-with-dash"])
        self.assertEqual(self.ok(e + ["get", "dash"]), "-starts-with-dash")
        # Not found: exit 1.
        self.fails(e + ["get", "missing"], 1, err_has="key not found")
        # Conditional writes: 412 -> exit 1, nothing changed.
        self.fails(e + ["put", "greeting", "x", "--if-match", str(rev + 1000)], 1, err_has="precondition failed")
        self.fails(e + ["put", "greeting", "x", "--if-absent"], 1, err_has="precondition failed")
        self.assertEqual(self.ok(e + ["get", "greeting"]), "hello world")
        out = json.loads(self.ok(e + ["--json", "put", "greeting", "v2", "--if-match", str(rev)]))
        self.assertEqual(out["key"], "greeting")
        self.assertGreater(out["revision"], rev)
        self.ok(e + ["put", "fresh", "1", "--if-absent"])
        self.fails(e + ["del", "greeting", "--if-match", str(rev)], 1, err_has="precondition failed")
        self.assertEqual(self.ok(e + ["del", "greeting", "--if-match", str(out["revision"])]), "OK\n")
        self.fails(e + ["get", "greeting"], 1)
        self.assertEqual(self.ok(e + ["del", "greeting"]), "OK\n")  # absent: still done
        self.assertEqual(json.loads(self.ok(e + ["--json", "del", "fresh"])), {"key": "fresh"})
        # The cluster agrees (read on the leader directly).
        self.assertEqual(http_request("127.0.0.1", leader.port, "GET", "/kv/odd").body.decode(), value)
        # KVCTL_ENDPOINTS is read when --endpoints is absent.
        rc, out, err = run(["get", "dash"], env_endpoints=eps(followers))
        self.assertEqual((rc, out), (0, "-starts-with-dash"), err)

    def test_ls_every_page_and_txn(self):
        c, leader, followers = self.cluster3()
        e = ["--endpoints", eps(followers)]
        # 1,100 keys (more than one page of 1,000), written in transactions.
        names = ["p:%04d" % i for i in range(1100)]
        for i in range(0, len(names), 100):
            body = {"compare": [], "success": [{"op": "put", "key": k, "value": "v " + k} for k in names[i:i + 100]],
                    "failure": []}
            self.ok(e + ["txn"], stdin=json.dumps(body))
        self.ok(e + ["put", "q", "other"])
        out = self.ok(e + ["ls", "p:", "--keys-only"])
        self.assertEqual(out.splitlines(), names)
        doc = json.loads(self.ok(e + ["--json", "ls", "p:"]))
        self.assertEqual([i["key"] for i in doc["items"]], names)
        self.assertEqual(doc["items"][5]["value"], "v p:0005")
        self.assertGreater(doc["revision"], 0)
        # Table: header, aligned columns, control bytes escaped.
        self.ok(e + ["put", "t:b", "-"], stdin="two\nlines")
        self.ok(e + ["put", "t:aaaa", "x"])
        lines = self.ok(e + ["ls", "t:"]).splitlines()
        self.assertEqual(len(lines), 3, lines)
        self.assertEqual(lines[0].split(), ["KEY", "REVISION", "VALUE"])
        self.assertTrue(lines[1].startswith("t:aaaa  "), lines)
        self.assertTrue(lines[2].endswith("two\\nlines"), lines)
        col = lines[0].index("REVISION")
        self.assertTrue(all(l[col - 2:col] == "  " and l[col] != " " for l in lines), lines)
        self.assertEqual(self.ok(e + ["ls", "nothing:"]), "")
        # txn: success and failure branches; a failed compare exits 1.
        rev_q = json.loads(self.ok(e + ["--json", "get", "q"]))["revision"]
        txn = {"compare": [{"key": "q", "revision": rev_q}],
               "success": [{"op": "put", "key": "q", "value": "new"}, {"op": "get", "key": "t:b"},
                           {"op": "get", "key": "absent"}, {"op": "delete", "key": "t:aaaa"}],
               "failure": [{"op": "get", "key": "q"}]}
        out = self.ok(e + ["txn"], stdin=json.dumps(txn)).splitlines()
        self.assertRegex(out[0], r"^SUCCEEDED revision \d+$")
        self.assertEqual(out[1], "put q")
        self.assertRegex(out[2], r"^get t:b \d+ two\\nlines$")
        self.assertEqual(out[3], "get absent (not found)")
        self.assertEqual(out[4], "delete t:aaaa")
        rc, out, err = run(e + ["txn"], stdin=json.dumps(txn))
        self.assertEqual(rc, 1, err)
        self.assertRegex(out.splitlines()[0], r"^FAILED revision \d+$")
        self.assertRegex(out.splitlines()[1], r"^get q \d+ new$")
        rc, out, err = run(e + ["--json", "txn"], stdin=json.dumps(txn))
        self.assertEqual(rc, 1)
        self.assertEqual(json.loads(out)["succeeded"], False)
        # A body the node refuses: 400 -> exit 1 with its message.
        self.fails(e + ["txn"], 1, stdin='{"success": [{"op": "frob", "key": "a"}]}')


class TestClusterCommands(KvctlCase):
    def test_status_leader_transfer_snapshot_members(self):
        c, leader, followers = self.cluster3(args=["--cluster-token", "s3cret"])
        e = ["--endpoints", eps([followers[0]]), "--token", "s3cret"]
        self.ok(e + ["put", "k", "v"])
        # status: every member from one endpoint, one leader, lag known.
        lines = self.ok(e + ["status"]).splitlines()
        self.assertEqual(lines[0].split(), ["ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "REACHABLE"])
        rows = [l.split() for l in lines[1:]]
        self.assertEqual(sorted(r[0] for r in rows), sorted(c.ids))
        self.assertEqual([r[1] for r in rows].count("leader"), 1)
        self.assertTrue(all(r[3] == leader.id and r[7] == "yes" for r in rows), rows)
        doc = json.loads(self.ok(e + ["--json", "status"]))
        self.assertEqual({m["id"] for m in doc["members"]}, set(c.ids))
        for m in doc["members"]:
            self.assertEqual(set(m), {"id", "role", "term", "leader", "commit-index", "last-applied", "lag",
                                      "reachable"})
            self.assertGreaterEqual(m["lag"], 0)
        # leader
        self.assertEqual(self.ok(e + ["leader"]), leader.id + "\n")
        self.assertEqual(json.loads(self.ok(e + ["--json", "leader"]))["leader"], leader.id)
        # transfer (to a named voter, through a follower's 307), then to any.
        target = followers[1]
        self.assertEqual(self.ok(e + ["transfer", target.id]), target.id + "\n")
        self.assertEqual(c.wait_leader(timeout=10)[0], target)
        out = self.ok(e + ["transfer"])
        self.assertNotEqual(out.strip(), target.id)
        # Without the token, mutating cluster requests are refused: exit 1.
        self.fails(["--endpoints", eps(c.nodes), "transfer"], 1, err_has="401")
        # snapshot on the chosen node.
        out = self.ok(["--endpoints", eps([followers[0]]), "--token", "s3cret", "snapshot"])
        self.assertRegex(out, r"^snapshot of 127\.0\.0\.1:%d at index \d+ term \d+\n$" % followers[0].port)
        snap = http_request("127.0.0.1", followers[0].port, "GET", "/log/snapshot").json()
        self.assertGreater(snap["last-included-index"], 0)
        # members add: a lone empty node pushed in; status shows it; remove.
        port = free_ports(1)[0]
        d = os.path.join(self.tmpdir, "extra-%d" % port)
        n = Node(":%d" % port, "127.0.0.1", port, d, d + ".log",
                 ["--port", str(port), "--working-dir", d, "--cluster-token", "s3cret"])
        self.extra.append(n)
        n.start()
        n.wait_ready()
        self.assertEqual(self.ok(e + ["--timeout", "30s", "members", "add", n.id]), "OK\n")
        doc = json.loads(self.ok(e + ["--json", "status"]))
        self.assertIn(n.id, {m["id"] for m in doc["members"]})
        self.assertEqual(self.ok(["--endpoints", "127.0.0.1:%d" % port, "--timeout", "30s", "get", "k"]), "v")
        self.assertEqual(self.ok(e + ["--timeout", "30s", "members", "remove", n.id]), "OK\n")
        wait_until(lambda: n.id not in http_request("127.0.0.1", leader.port, "GET", "/cluster/info").json()["peers"],
                   10, what="removal")
        # A dead member: status still lists it, unreachable; exit 0.
        dead = c.nodes[0]
        dead.kill()
        rc, out, err = run(["--endpoints", eps(c.nodes[1:]), "status"])
        self.assertEqual(rc, 0, err)
        row = [l.split() for l in out.splitlines() if l.split()[0] == dead.id][0]
        self.assertEqual(row[1:], ["-"] * 6 + ["no"])

    def test_status_through_forwarded_ports(self):
        """Members reached at addresses that are not their ids (a
        container's port mapping, NAT) are one row each, named by id."""
        c = self.make_cluster(3)
        c.wait_leader(timeout=15)
        fwd = [Forwarder(n.port) for n in c.nodes]
        try:
            doc = json.loads(self.ok(["--endpoints", ",".join("127.0.0.1:%d" % f.port for f in fwd), "--json",
                                      "status"]))
            one = json.loads(self.ok(["--endpoints", "127.0.0.1:%d" % fwd[0].port, "--json", "status"]))
        finally:
            for f in fwd:
                f.close()
        self.assertEqual(sorted((m["id"], m["reachable"]) for m in doc["members"]),
                         sorted((n.id, True) for n in c.nodes))
        self.assertEqual([m["role"] for m in doc["members"]].count("leader"), 1)
        self.assertEqual(sorted(m["id"] for m in one["members"]), sorted(c.ids))

    def test_endpoint_rotation_and_unavailable(self):
        c, leader, followers = self.cluster3()
        closed = free_ports(1)[0]
        # The first endpoint is down: the next one answers.
        e = ["--endpoints", "127.0.0.1:%d,%s" % (closed, eps(followers))]
        self.assertEqual(self.ok(e + ["put", "r", "1"])[:2], "OK")
        self.assertEqual(self.ok(e + ["get", "r"]), "1")
        lines = self.ok(e + ["status"]).splitlines()
        self.assertIn("127.0.0.1:%d" % closed, [l.split()[0] for l in lines])
        # Every endpoint down: exit 3 after --timeout, one stderr line.
        t0 = time.monotonic()
        out, err = self.fails(["--endpoints", "127.0.0.1:%d" % closed, "--timeout", "1s", "get", "r"], 3,
                              err_has="cluster unavailable")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertIn("refused", err)
        self.fails(["--endpoints", "127.0.0.1:%d" % closed, "--timeout", "1s", "status"], 3)

    def test_lost_answer_retried_only_when_safe(self):
        """The node acts on the request but its answer is lost. A conditional
        write is not sent again (exit 3, "may or may not have taken
        effect"); an unconditional one and a read are retried."""
        c = self.make_cluster(1)
        node = c.nodes[0]
        f = Forwarder(node.port, drop_answers=True)
        try:
            e = ["--endpoints", "127.0.0.1:%d" % f.port, "--timeout", "1s"]
            out, err = self.fails(e + ["put", "cas", "1", "--if-absent"], 3, err_has="may or may not have taken effect")
            self.assertEqual(f.accepted, 1)
            # It did take effect: sending it again would have answered 412.
            self.assertEqual(http_request("127.0.0.1", node.port, "GET", "/kv/cas").body, b"1")
            for args in (["put", "plain", "2"], ["get", "cas"]):
                before = f.accepted
                out, err = self.fails(e + args, 3, err_has="cluster unavailable")
                self.assertGreater(f.accepted - before, 1, args)
            txn = {"compare": [], "success": [{"op": "put", "key": "t", "value": "1"}], "failure": []}
            before = f.accepted
            self.fails(e + ["txn"], 3, stdin=json.dumps(txn), err_has="may or may not have taken effect")
            self.assertEqual(f.accepted - before, 1)
        finally:
            f.close()

    def test_no_leader_retried_until_timeout(self):
        c, leader, followers = self.cluster3()
        self.ok(["--endpoints", eps(c.nodes), "put", "a", "1"])
        survivor = followers[0]
        leader.kill()
        followers[1].kill()
        wait_until(lambda: survivor.info()["leader"] is None, 10, what="the survivor forgets the leader")
        # 503 no leader, retried with backoff, then exit 3.
        t0 = time.monotonic()
        out, err = self.fails(["--endpoints", eps([survivor]), "--timeout", "2s", "put", "a", "2"], 3,
                              err_has="no leader")
        self.assertGreaterEqual(time.monotonic() - t0, 1.9)
        self.fails(["--endpoints", eps([survivor]), "--timeout", "1s", "leader"], 3, err_has="no leader")
        # The same write succeeds when a majority returns within --timeout.
        p = subprocess.Popen([KVCTL, "--endpoints", eps(c.nodes), "--timeout", "30s", "put", "a", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(1.0)
            self.assertIsNone(p.poll(), "kvctl should still be retrying")
            followers[1].start()
            out, err = p.communicate(timeout=40)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(self.ok(["--endpoints", eps([survivor, followers[1]]), "get", "a"]), "3")

    def test_session_while_leader_is_killed(self):
        """Runs the commands an operator would while the leader dies; every
        one ends 0 and the data stays. The transcript goes to
        $KVCTL_SESSION_LOG when set."""
        c, leader, followers = self.cluster3()
        e = ["--endpoints", eps(c.nodes)]
        transcript = []

        def step(args, stdin=None, want=0):
            t0 = time.monotonic()
            rc, out, err = run(e + args, stdin)
            transcript.append("$ kvctl --endpoints %s %s\n%s%s%s[exit %d, %.2f s]\n" % (
                eps(c.nodes), " ".join(args), out, "" if out.endswith("\n") or not out else "\n", err, rc,
                time.monotonic() - t0))
            self.assertEqual(rc, want, "%s: %s %s" % (args, out, err))
            return out

        step(["status"])
        step(["put", "config:mode", "blue"])
        step(["leader"])
        transcript.append("# SIGKILL the leader %s (pid %d)\n" % (leader.id, leader.proc.pid))
        leader.kill()
        step(["put", "config:mode", "green"])
        step(["get", "config:mode"])
        new = step(["leader"]).strip()
        self.assertIn(new, [f.id for f in followers])
        out = step(["status"])
        row = [l.split() for l in out.splitlines() if l.split()[0] == leader.id][0]
        self.assertEqual(row[-1], "no")
        step(["ls", "config:"])
        transcript.append("# restart %s\n" % leader.id)
        leader.start()
        leader.wait_ready()
        wait_until(lambda: leader.info()["last-applied"] >= followers[0].info()["commit-index"], 15,
                   what="the old leader catches up")
        step(["status"])
        log = os.environ.get("KVCTL_SESSION_LOG")
        if log:
            with open(log, "w") as f:
                f.write("".join(transcript))


class TestWatch(KvctlCase):
    def test_watch_prints_events(self):
        c, leader, followers = self.cluster3()
        probe = self._probe_watch(followers[0])
        if probe == 404:
            self.skipTest("the node answers 404 to /watch (watch not merged yet)")
        e = ["--endpoints", eps([followers[0]])]
        p = subprocess.Popen([KVCTL] + e + ["watch", "w:"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pj = subprocess.Popen([KVCTL] + e + ["--json", "watch", "w:"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            rev1 = json.loads(self.ok(e + ["--json", "put", "w:a", "one two"]))["revision"]
            self.ok(e + ["put", "other", "x"])
            self.ok(e + ["del", "w:a"])
            line1 = p.stdout.readline().decode()
            line2 = p.stdout.readline().decode()
            self.assertEqual(line1, "%d put w:a one two\n" % rev1)
            self.assertRegex(line2, r"^\d+ delete w:a\n$")
            j1 = json.loads(pj.stdout.readline())
            self.assertEqual(j1, {"event": "put", "key": "w:a", "value": "one two", "revision": rev1})
            j2 = json.loads(pj.stdout.readline())
            self.assertEqual((j2["event"], j2["key"]), ("delete", "w:a"))
        finally:
            for q in (p, pj):
                q.send_signal(signal.SIGINT)
                q.wait(timeout=10)
                q.stdout.close()
                q.stderr.close()
        # --from replays history.
        q = subprocess.Popen([KVCTL] + e + ["watch", "w:", "--from", str(rev1)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            self.assertEqual(q.stdout.readline().decode(), "%d put w:a one two\n" % rev1)
        finally:
            q.kill()
            q.wait()
            q.stdout.close()
            q.stderr.close()

    def test_watch_resumes_on_another_node(self):
        """The watched node dies: kvctl reconnects to the next endpoint with
        Last-Event-ID and prints every event once, in order."""
        c, leader, followers = self.cluster3()
        if self._probe_watch(followers[0]) == 404:
            self.skipTest("the node answers 404 to /watch (watch not merged yet)")
        e = ["--endpoints", eps(followers + [leader])]
        p = subprocess.Popen([KVCTL] + e + ["watch", "r:"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            revs = [json.loads(self.ok(e + ["--json", "put", "r:1", "a"]))["revision"]]
            self.assertEqual(p.stdout.readline().decode(), "%d put r:1 a\n" % revs[0])
            followers[0].kill()
            for i in (2, 3):
                revs.append(json.loads(self.ok(e + ["--json", "put", "r:%d" % i, "v%d" % i]))["revision"])
            self.assertEqual(p.stdout.readline().decode(), "%d put r:2 v2\n" % revs[1])
            self.assertEqual(p.stdout.readline().decode(), "%d put r:3 v3\n" % revs[2])
        finally:
            p.kill()
            p.wait()
            err = p.stderr.read().decode()
            p.stdout.close()
            p.stderr.close()
        self.assertIn("reconnecting after revision %d" % revs[0], err)

    def _probe_watch(self, node):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=3)
        try:
            conn.request("GET", "/watch?prefix=probe:")
            return conn.getresponse().status
        except socket.timeout:
            return 200  # a stream that sends its head with the first event
        finally:
            conn.close()

    def test_watch_404_is_reported(self):
        c, leader, followers = self.cluster3()
        if self._probe_watch(followers[0]) != 404:
            self.skipTest("the node serves /watch")
        self.fails(["--endpoints", eps([followers[0]]), "watch"], 1, err_has="does not serve /watch")


if __name__ == "__main__":
    unittest.main()
