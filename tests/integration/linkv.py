"""linkv.py: the linearizability run of cluster.py (clients, nemesis,
lincheck) with the second-level key-value API (API.md §10, §12): clients
also issue If-Match compare-and-set PUTs, If-None-Match: * creates,
If-Match DELETEs and POST /txn, and record revisions (ETag, a txn's
"revision", its gets' results), so that lincheck checks revisions,
conditions and the atomicity of transactions, not only values.

Outcomes, as in cluster.py: 200 is ok (with its revision), 412
`precondition failed` is "refused" (the condition was checked at apply time
and did not hold: nothing changed), a request that certainly did not reach a
leader (connection refused, a last hop still 307, `503 no leader`) failed,
any other answer or error of a write is unknown (its revision unknown too).
A GET answered 200 or 404 `key not found` is ok with the ETag it carried;
any other GET failed. A client's conditions use the revisions it last saw
for each key (possibly stale, so some are refused)."""

import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time

from cluster import (Nemesis, http_request, lincheck_bin, now_us, run_under_nemesis,
                     split_location)

KEYS = ["x", "y", "z"]
CLIENTS = 5


class History:
    """The recorded operations, as lincheck text lines; thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lines = []
        self.counts = {}

    def add(self, line, kind, outcome):
        with self.lock:
            self.lines.append(line)
            k = (kind, outcome)
            self.counts[k] = self.counts.get(k, 0) + 1


def etag(r):
    """The revision in an ETag header ("N"), or 0."""
    v = r.headers.get("etag", "")
    if len(v) >= 3 and v[0] == '"' and v[-1] == '"' and v[1:-1].isdigit():
        return int(v[1:-1])
    return 0


def txn_text(body, result):
    """The compare and branches columns of a txn line; result is the 200
    answer's JSON (None when the outcome is not ok)."""
    cmp = ",".join("%s=%d" % (c["key"], c["revision"]) for c in body["compare"]) or "-"
    ran = None if result is None else (0 if result["succeeded"] else 1)
    branches = []
    for b, name in enumerate(("success", "failure")):
        parts = []
        for i, op in enumerate(body[name]):
            if op["op"] == "put":
                parts.append("put:%s:%s" % (op["key"], op["value"]))
            elif op["op"] == "delete":
                parts.append("delete:%s" % op["key"])
            elif ran != b:
                parts.append("get:%s" % op["key"])
            else:
                res = result["results"][i]
                if res.get("found", True) is False:
                    parts.append("get:%s=-" % op["key"])
                else:
                    parts.append("get:%s=%s@%d" % (op["key"], res["value"], res["revision"]))
        branches.append(",".join(parts) or "-")
    return cmp, "/".join(branches)


class KvClient(threading.Thread):
    """One client: GET, PUT, DELETE, PUT If-Match, PUT If-None-Match: *,
    DELETE If-Match and POST /txn on KEYS with unique values, following up
    to 3 redirects; a new client id after an unknown outcome."""

    def __init__(self, num, cluster, history, stop_ev, seed, pause=0.0):
        super().__init__(daemon=True)
        self.pause = pause  # seconds between operations
        self.num = num
        self.cluster = cluster
        self.history = history
        self.stop_ev = stop_ev
        self.rng = random.Random(seed)
        self.gen = 0
        self.seq = 0
        self.seen = {k: 0 for k in KEYS}  # last revision seen per key (0: absent)
        self.errors = []

    def client_id(self):
        return self.num * 1000 + self.gen

    def value(self):
        self.seq += 1
        return "c%d-%d" % (self.num, self.seq)

    def seen_rev(self, key):
        # Mostly the last revision seen; sometimes an older guess, so that
        # refusals are common.
        r = self.seen[key]
        if r > 0 and self.rng.random() < 0.15:
            r = max(1, r - self.rng.randint(1, 3))
        return r

    def make_txn(self):
        rng = self.rng
        body = {"compare": [], "success": [], "failure": []}
        for key in rng.sample(KEYS, rng.randint(0, 2)):
            body["compare"].append({"key": key, "revision": self.seen_rev(key)})
        for name, lo, hi in (("success", 1, 3), ("failure", 0, 2)):
            for _ in range(rng.randint(lo, hi)):
                key = rng.choice(KEYS)
                p = rng.random()
                if p < 0.5:
                    body[name].append({"op": "put", "key": key, "value": self.value()})
                elif p < 0.7:
                    body[name].append({"op": "delete", "key": key})
                else:
                    body[name].append({"op": "get", "key": key})
        return body

    def pick(self):
        """The next operation: dict kind, method, path, body, headers, key
        (a txn: its body as a dict in txn), if_rev."""
        key = self.rng.choice(KEYS)
        p = self.rng.random()
        op = {"key": key, "path": "/kv/" + key, "body": None, "headers": {}, "if_rev": 0}
        if p < 0.30:
            op.update(kind="get", method="GET")
        elif p < 0.45:
            op.update(kind="put", method="PUT", body=self.value())
        elif p < 0.50:
            op.update(kind="delete", method="DELETE")
        elif p < 0.65:
            op.update(kind="put-if", method="PUT", body=self.value())
        elif p < 0.72:
            op.update(kind="put-absent", method="PUT", body=self.value(),
                      headers={"If-None-Match": "*"})
        elif p < 0.78:
            op.update(kind="delete-if", method="DELETE")
        else:
            txn = self.make_txn()
            op.update(kind="txn", method="POST", path="/txn", body=json.dumps(txn), txn=txn)
        if op["kind"] in ("put-if", "delete-if"):
            op["if_rev"] = max(1, self.seen_rev(key))
            op["headers"] = {"If-Match": '"%d"' % op["if_rev"]}
        return op

    def request(self, target, op):
        """Sends op following up to 3 redirects. Returns (response or None,
        error: None, "refused", "other" or "redirect")."""
        host, port, path = target.host, target.port, op["path"]
        r = None
        for _hops in range(4):
            conn = self.conns.get((host, port))
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=4.0)
                self.conns[(host, port)] = conn
            try:
                r = http_request(host, port, op["method"], path, op["body"], 4.0,
                                 headers=op["headers"], conn=conn)
            except ConnectionRefusedError:
                self.conns.pop((host, port), None)
                return None, "refused"
            except (OSError, http.client.HTTPException):
                self.conns.pop((host, port), None)
                return None, "other"
            if r.headers.get("connection", "").lower() == "close":
                conn.close()
                self.conns.pop((host, port), None)
            if r.status != 307:
                return r, None
            host, port, path = split_location(r.headers.get("location", ""))
        return r, "redirect"

    def close(self):
        for conn in self.conns.values():
            conn.close()
        self.conns = {}

    def run(self):
        self.conns = {}
        target = self.rng.choice(self.cluster.nodes)
        while not self.stop_ev.is_set():
            op = self.pick()
            inv = now_us()
            r, err = self.request(target, op)
            ret = now_us()
            outcome, rev, value, result = self.classify(op["kind"], r, err)
            if err is not None or r.status in (503, 307):
                target = self.rng.choice(self.cluster.nodes)
            self.record(op, value, result, inv, ret, outcome, rev)
            if outcome == "unknown":
                self.gen += 1
                self.close()
            if outcome not in ("ok", "refused"):
                time.sleep(0.05)
            elif self.pause:
                time.sleep(self.pause)
        self.close()

    def classify(self, kind, r, err):
        """(outcome, revision, value read, txn result JSON)."""
        if err == "refused" or err == "redirect":
            return "fail", 0, None, None
        if err is not None:
            return ("fail" if kind == "get" else "unknown"), 0, None, None
        if kind == "get":
            if r.status == 200:
                return "ok", etag(r), r.body.decode(), None
            if r.status == 404 and r.body == b"key not found\n":
                return "ok", 0, None, None
            return "fail", 0, None, None
        if r.status == 200:
            if kind == "txn":
                try:
                    result = json.loads(r.body)
                    return "ok", int(result["revision"]), None, result
                except (ValueError, KeyError, TypeError):
                    self.errors.append((kind, r))
                    return "unknown", 0, None, None
            if kind in ("put", "put-if", "put-absent"):
                if etag(r) == 0:
                    self.errors.append((kind, "no ETag", r))
                return "ok", etag(r), None, None
            return "ok", 0, None, None
        if r.status == 412 and kind in ("put-if", "put-absent", "delete-if"):
            if r.body != b"precondition failed\n":
                self.errors.append((kind, r))
            return "refused", 0, None, None
        if r.status == 503 and r.body == b"no leader\n":
            return "fail", 0, None, None
        if r.status != 503:
            self.errors.append((kind, r))
        return "unknown", 0, None, None

    def record(self, op, value, result, inv, ret, outcome, rev):
        """Adds op's line to the history and notes the revisions it saw."""
        cid, kind, key = self.client_id(), op["kind"], op["key"]
        if kind == "txn":
            txn = op["txn"]
            cmp, branches = txn_text(txn, result)
            line = "%d txn %s %s %d %d %s" % (cid, cmp, branches, inv, ret, outcome)
            if outcome == "ok":
                branch = "success" if result["succeeded"] else "failure"
                line += " branch=" + branch
                for i, o in enumerate(txn[branch]):
                    if o["op"] == "put":
                        self.seen[o["key"]] = rev
                    elif o["op"] == "delete":
                        self.seen[o["key"]] = 0
                    else:
                        self.seen[o["key"]] = result["results"][i].get("revision", 0)
        else:
            v = value if kind == "get" else op["body"]
            line = "%d %s %s %s %d %d %s" % (cid, kind, key, v or "-", inv, ret, outcome)
            if kind in ("put-if", "delete-if"):
                line += " if=%d" % op["if_rev"]
            if outcome == "ok":
                self.seen[key] = 0 if kind.startswith("delete") else rev
        if rev:
            line += " rev=%d" % rev
        self.history.add(line, kind, outcome)


class NoCrashAllNemesis(Nemesis):
    """The Nemesis without its crash-all actions: kills (the leader half of
    the time, at most one node dead), restarts, partitions 1|2 and heals.
    For watchers: a node's recent events do not survive its restart, so
    after every node restarted a watcher may find its next revision nowhere
    (410) and could not be checked to the end."""

    def crash_all(self):
        self.act()

    def act(self):
        c = self.cluster
        c.assert_no_crash()
        dead = [n for n in c.nodes if not n.alive()]
        live = [n for n in c.nodes if n.alive()]
        a = self.rng.choice(["partition", "heal", "restart" if dead else "kill", "kill"])
        if a == "kill" and not dead:
            n = self.rng.choice(live)
            if self.rng.random() < 0.5:
                for x in live:
                    i = x.try_info(0.5)
                    if i and i["role"] == "leader":
                        n = x
                        break
            n.kill()
            self.actions.append("kill %s" % n.id)
        elif a in ("kill", "restart") and dead:
            n = self.rng.choice(dead)
            n.start()
            n.wait_ready(10)
            self.actions.append("restart %s" % n.id)
        elif a == "partition":
            nodes = list(c.nodes)
            self.rng.shuffle(nodes)
            groups = [nodes[:1], nodes[1:]]
            self.partition_fn(groups)
            self.actions.append("partition %s" % [[n.id for n in g] for g in groups])
        else:
            self.heal_fn()
            self.actions.append("heal")


def run_clients(case, c, duration, partition_fn=None, heal_fn=None, extra=None, seed=None,
                on_running=None, pause=0.0, nemesis_class=Nemesis):
    """Runs CLIENTS KvClients against c for duration seconds under the
    Nemesis (on_running() is called once they run; each client waits pause
    seconds between operations), then recovers the cluster. Returns
    (history, nemesis, seed)."""
    c.wait_leader(timeout=10)
    if seed is None:
        seed = int(os.environ.get("KVD_LIN_SEED", str(random.randrange(1 << 30))))
    history = History()
    stop_clients = threading.Event()
    stop_nemesis = threading.Event()
    clients = [KvClient(i + 1, c, history, stop_clients, seed + i, pause) for i in range(CLIENTS)]
    nemesis = nemesis_class(c, stop_nemesis, seed, partition_fn, heal_fn, extra)
    run_under_nemesis(case, c, clients, nemesis, stop_clients, stop_nemesis, duration, heal_fn,
                      on_running)
    for t in clients:
        case.assertEqual(t.errors, [], "unexpected answers; seed %d" % seed)
    return history, nemesis, seed


def check_history(case, history, nemesis, seed):
    """Writes the history to the case's tmpdir and asserts with lincheck
    that it is linearizable. Returns lincheck's output line."""
    lincheck = lincheck_bin()
    if not os.path.exists(lincheck):
        case.fail("lincheck not found at %s (build it: cmake --build build --target lincheck)" % lincheck)
    path = os.path.join(case.tmpdir, "history.txt")
    with open(path, "w") as f:
        f.write("# seed %d\n# nemesis: %s\n" % (seed, "; ".join(nemesis.actions)))
        f.write("\n".join(history.lines) + "\n")
    counts = sorted("%s %s: %d" % (k[0], k[1], v) for k, v in history.counts.items())
    msg = "seed %d, counts %s, nemesis %r" % (seed, ", ".join(counts), nemesis.actions)
    if os.environ.get("KVD_LIN_VERBOSE"):
        sys.stderr.write("\n%s\n" % msg)
    for kind in ("put", "get", "txn", "put-if"):
        case.assertGreaterEqual(history.counts.get((kind, "ok"), 0), 10,
                                "too little progress (%s); %s" % (kind, msg))
    t0 = time.monotonic()
    p = subprocess.run([lincheck, path], capture_output=True, text=True, timeout=240)
    took = time.monotonic() - t0
    if p.returncode != 0:
        keep = "/tmp/kvd-lincheck-kv-history-%d-%d.txt" % (os.getpid(), seed)
        shutil.copy(path, keep)
        case.fail("lincheck exit %d: %s %s (history kept in %s); %s"
                  % (p.returncode, p.stdout.strip(), p.stderr.strip(), keep, msg))
    case.assertIn("linearizable", p.stdout)
    check_tampered(case, lincheck, history, path)
    if os.environ.get("KVD_LIN_VERBOSE"):
        sys.stderr.write("lincheck: %s (%.2f s)\n" % (p.stdout.strip(), took))
    return p.stdout.strip()


def check_tampered(case, lincheck, history, path):
    """The recorded history must have teeth: the first ok GET that saw the
    value of an ok PUT at revision R is changed to have seen it at R + 1 (a
    write has one revision), and lincheck must reject that history."""
    put_rev = {}
    for line in history.lines:
        f = line.split()
        if f[1] == "put" and f[6] == "ok":
            put_rev[f[3]] = f[-1]
    lines = list(history.lines)
    # (the first such GET: a failing search explores every linearization of
    # what came before, so an early one keeps it short)
    for i in range(len(lines)):
        f = lines[i].split()
        if f[1] == "get" and f[6] == "ok" and put_rev.get(f[3]) == f[-1]:
            rev = int(f[-1][len("rev="):])
            lines[i] = " ".join(f[:-1] + ["rev=%d" % (rev + 1)])
            break
    else:
        case.fail("no GET saw an acknowledged PUT's value: nothing to tamper with")
    bad = path + ".tampered"
    with open(bad, "w") as f:
        f.write("\n".join(lines) + "\n")
    p = subprocess.run([lincheck, bad], capture_output=True, text=True, timeout=240)
    case.assertEqual(p.returncode, 1, "lincheck accepted a tampered history: %s %s"
                     % (p.stdout.strip(), p.stderr.strip()))


# ---- watch streams (API.md §13) --------------------------------------------
#
# The applied sequence of changes is rebuilt from GET /log (the cluster runs
# with a snapshot threshold too high to compact) by replaying the commands
# through a copy of the state machine's rules (engine/engine.c): PUT, DELETE
# (a change even when the key is absent, as engine_apply_results() reports
# it), PUT-IF / PUT-ABSENT / DELETE-IF when their condition holds, TXN's
# selected branch (its puts and deletes at the entry's revision), CLEAR.
# linearize_watch_check() (lincheck --watch) then compares each watcher's
# stream with it.


def read_log(node):
    """Every committed entry of node's log: [(index, command)], from 1."""
    out, frm, commit = [], 1, None
    while True:
        r = node.get("/log?from=%d&limit=1000" % frm, timeout=10.0)
        if r.status != 200:
            raise AssertionError("GET /log: %r" % r)
        j = r.json()
        if commit is None:
            commit = j["commit-index"]
            if j["first-index"] > 1:
                raise AssertionError("log compacted (first index %d): raise the snapshot threshold"
                                     % j["first-index"])
        ents = [e for e in j["entries"] if e["index"] <= commit]
        out += [(e["index"], e["command"]) for e in ents]
        if not j["entries"] or j["entries"][-1]["index"] >= commit:
            return out
        frm = j["entries"][-1]["index"] + 1


def applied_changes(entries):
    """Replays [(index, command)]; returns (changes as change-format lines,
    final state {key: (value, revision)})."""
    state, changes = {}, []

    def rev_of(k):
        return state[k][1] if k in state else 0

    for index, cmd in entries:
        verb, _, rest = cmd.partition(" ")
        if verb == "PUT":
            k, _, v = rest.partition(" ")
            state[k] = (v, index)
            changes.append("%d put %s %s" % (index, k, v))
        elif verb == "DELETE":
            state.pop(rest, None)
            changes.append("%d delete %s" % (index, rest))
        elif verb == "PUT-IF" or verb == "DELETE-IF":
            rev, _, kv = rest.partition(" ")
            k, _, v = kv.partition(" ")
            if k in state and state[k][1] == int(rev):
                if verb == "PUT-IF":
                    state[k] = (v, index)
                    changes.append("%d put %s %s" % (index, k, v))
                else:
                    del state[k]
                    changes.append("%d delete %s" % (index, k))
        elif verb == "PUT-ABSENT":
            k, _, v = rest.partition(" ")
            if k not in state:
                state[k] = (v, index)
                changes.append("%d put %s %s" % (index, k, v))
        elif verb == "TXN":
            t = json.loads(rest)
            held = all(rev_of(c["key"]) == c["revision"] for c in t.get("compare", []))
            for op in t.get("success" if held else "failure", []):
                if op["op"] == "put":
                    state[op["key"]] = (op["value"], index)
                    changes.append("%d put %s %s" % (index, op["key"], op["value"]))
                elif op["op"] == "delete":
                    state.pop(op["key"], None)
                    changes.append("%d delete %s" % (index, op["key"]))
        elif verb == "CLEAR":
            state = {}
            changes.append("%d clear" % index)
    return changes, state


class Watcher(threading.Thread):
    """One logical watcher: GET /watch?<query>&from=R on a node, reading
    Server-Sent Events; when the connection ends (node killed, cut off) it
    reconnects to another node from the revision of its last event, after
    dropping that revision's events (so a txn cut in the middle is read
    again whole). events: change-format lines."""

    def __init__(self, cluster, query, start, seed, stop_ev):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.query = query  # "prefix=" or "key=x"
        self.start_rev = start
        self.rng = random.Random(seed)
        self.stop_ev = stop_ev
        self.events = []
        self.reconnects = 0
        self.compacted = 0  # 410 answers
        self.oldest = None  # X-Kvd-Compacted-Revision of the last one
        self.errors = []

    def last_rev(self):
        return int(self.events[-1].split()[0]) if self.events else 0

    def run(self):
        frm = self.start_rev
        while not self.stop_ev.is_set():
            node = self.rng.choice(self.cluster.nodes)
            try:
                self.stream(node, frm)
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if self.stop_ev.is_set():
                break
            if self.events:
                last = self.last_rev()
                while self.events and self.last_rev() == last:
                    self.events.pop()
                frm = last
            self.reconnects += 1
            self.stop_ev.wait(0.2)

    def stream(self, node, frm):
        conn = http.client.HTTPConnection(node.host, node.port, timeout=12.0)
        try:
            conn.request("GET", "/watch?%s&from=%d" % (self.query, frm))
            r = conn.getresponse()
            if r.status != 200:
                if r.status == 410:
                    # (that node no longer holds frm: try another)
                    self.compacted += 1
                    self.oldest = r.getheader("X-Kvd-Compacted-Revision")
                elif r.status not in (503, 307):
                    self.errors.append("GET /watch on %s: %d %r" % (node.id, r.status, r.read()[:200]))
                return
            kind, data = None, None
            while not self.stop_ev.is_set():
                line = r.fp.readline()  # (keep-alives every 10 s; a timeout reconnects)
                if not line:
                    return
                line = line.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:].strip())
                elif line == "" and kind is not None and data is not None:
                    if kind == "clear":
                        self.events.append("%d clear" % data["revision"])
                    elif kind == "delete":
                        self.events.append("%d delete %s" % (data["revision"], data["key"]))
                    else:
                        self.events.append("%d put %s %s" % (data["revision"], data["key"], data["value"]))
                    kind, data = None, None
        finally:
            conn.close()


def watch_available(node):
    """False when GET /watch answers 404 (watch not in this build)."""
    conn = http.client.HTTPConnection(node.host, node.port, timeout=5.0)
    try:
        conn.request("GET", "/watch?prefix=&from=1")
        return conn.getresponse().status != 404
    finally:
        conn.close()


def last_matching(applied, query):
    """The revision of the last change in applied that a watcher of query
    ("prefix=P" or "key=K") sees (clears match all), or 0."""
    name, _, arg = query.partition("=")
    for line in reversed(applied):
        f = line.split()
        if f[1] == "clear" or (f[2] == arg if name == "key" else f[2].startswith(arg)):
            return int(f[0])
    return 0


def check_watchers(case, applied, watchers):
    """Each watcher's stream against the applied changes (lincheck --watch):
    all of them for a watcher that caught up (the cluster is healed and
    every node applied everything), a prefix for one that could not resume
    (410 everywhere). Returns how many were complete."""
    lincheck = lincheck_bin()
    path = os.path.join(case.tmpdir, "applied.txt")
    with open(path, "w") as f:
        f.write("\n".join(applied) + "\n")
    done = 0
    for i, w in enumerate(watchers):
        ev = os.path.join(case.tmpdir, "watch-%d.txt" % i)
        with open(ev, "w") as f:
            f.write("\n".join(w.events) + "\n")
        complete = w.last_rev() >= last_matching(applied, w.query)
        args = [lincheck, "--watch", path, ev, "--from", str(w.start_rev)]
        args += ["--complete"] if complete else []
        q = w.query.split("=", 1)
        args += ["--key", q[1]] if q[0] == "key" else ["--prefix", q[1]]
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
        case.assertEqual(p.returncode, 0, "watcher %d (%s from %d, %d reconnects, %d 410s): %s %s"
                         % (i, w.query, w.start_rev, w.reconnects, w.compacted, p.stdout.strip(),
                            p.stderr.strip()))
        if complete and done == 0 and len(w.events) >= 3:
            # Teeth: the same stream with one event lost must be rejected.
            with open(ev + ".lost", "w") as f:
                f.write("\n".join(w.events[:1] + w.events[2:]) + "\n")
            bad = subprocess.run([x if x != ev else ev + ".lost" for x in args],
                                 capture_output=True, text=True, timeout=60)
            case.assertEqual(bad.returncode, 1, "lincheck --watch accepted a lost event: %s %s"
                             % (bad.stdout.strip(), bad.stderr.strip()))
        done += complete
    return done
