"""cluster.py: helpers to run real multi-node kvd clusters in tests.

Starts real kvd processes (the binary named by KVD_BIN, default
build/kvd) on loopback with fresh temporary data directories and free
ports, or inside network namespaces (see test_netns.py), and talks to them
over plain HTTP with the standard library only.

Invariants the helpers keep:
- every wait is bounded (a deadline, never an unbounded loop or sleep);
- every process a test starts is SIGKILLed in tearDown, and each node's
  stderr is printed when the test failed;
- requests never follow redirects unless asked to (follow=True).
"""

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KVD_BIN = os.environ.get("KVD_BIN") or os.path.join(ROOT, "build", "kvd")

INFO_FIELDS = {
    "id",
    "role",
    "term",
    "leader",
    "voted-for",
    "peers",
    "learners",
    "commit-index",
    "last-applied",
}


def lincheck_bin():
    """Path of the lincheck tool: $LINCHECK, else next to the kvd build."""
    env = os.environ.get("LINCHECK")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(KVD_BIN))
    for build in (here, os.path.dirname(here)):  # build/kvd or build/api/kvd
        path = os.path.join(build, "tests", "sim", "lincheck")
        if os.path.exists(path):
            return path
    return os.path.join(here, "tests", "sim", "lincheck")


def free_ports(n):
    """Returns n distinct TCP ports that were free on 127.0.0.1 just now.
    They are taken below the kernel's ephemeral range, so that outgoing
    connections (clients, peers) never grab the port of a node that is down
    between a kill and its restart."""
    lo = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    base = 20000 if lo > 22000 else 1024
    rng = random.Random()
    ports = []
    for _ in range(10000):
        if len(ports) == n:
            break
        p = rng.randrange(base, lo)
        # Ports near round numbers (19001, 8001, ...) are what fixed-port
        # tests elsewhere on this machine use.
        if p in ports or p % 1000 < 50:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
            ports.append(p)
        except OSError:
            pass
        finally:
            s.close()
    if len(ports) < n:
        raise RuntimeError("no free ports below %d" % lo)
    return ports


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or timeout
    seconds pass (raises AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lower-case names
        self.body = body  # bytes

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%d %r %r>" % (self.status, self.headers.get("location"), self.body[:200])


# TLS mode (test_tls.py): when set_tls() was called, every node started by
# this module gets TLS_ARGS (--tls-cert/--tls-key/--tls-ca...) and every
# request goes over HTTPS with TLS_CONTEXT (an ssl.SSLContext holding the
# test CA and a client certificate). Off by default.
TLS_ARGS = []
TLS_CONTEXT = None
TLS_HEADERS = {}


def set_tls(args=(), context=None, headers=None):
    """Turns TLS mode on (args, an ssl.SSLContext, extra request headers
    such as a client token) or off (no arguments)."""
    global TLS_ARGS, TLS_CONTEXT, TLS_HEADERS
    TLS_ARGS = list(args)
    TLS_CONTEXT = context
    TLS_HEADERS = dict(headers or {})


def new_connection(host, port, timeout):
    """An http.client connection to host:port: HTTPS in TLS mode."""
    if TLS_CONTEXT is not None:
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=TLS_CONTEXT)
    return http.client.HTTPConnection(host, port, timeout=timeout)


def http_request(host, port, method, path, body=None, timeout=5.0, headers=None, conn=None):
    """One HTTP/1.1 request; returns a Response. Raises OSError (including
    socket.timeout) or http.client.HTTPException on transport failure. With
    conn given (an http.client.HTTPConnection), reuses it (keep-alive)."""
    own = conn is None
    if own:
        conn = new_connection(host, port, timeout)
    if TLS_HEADERS:
        headers = dict(TLS_HEADERS, **(headers or {}))
    try:
        if isinstance(body, str):
            body = body.encode("utf-8")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        return Response(r.status, hdrs, data)
    except BaseException:
        conn.close()
        raise
    finally:
        if own:
            conn.close()


def split_location(loc):
    """'http://h:p/path?q' -> (h, p, '/path?q') (also https:// in TLS mode)."""
    scheme = "https://" if TLS_CONTEXT is not None else "http://"
    assert loc.startswith(scheme), loc
    rest = loc[len(scheme):]
    slash = rest.find("/")
    hostport, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port), path


class Client:
    """A keep-alive HTTP client for one thread, with optional 307 following.
    Not thread-safe: give each thread its own."""

    def __init__(self, timeout=5.0):
        self.timeout = timeout
        self.conns = {}

    def _conn(self, host, port):
        c = self.conns.get((host, port))
        if c is None:
            c = new_connection(host, port, self.timeout)
            self.conns[(host, port)] = c
        return c

    def request(self, host, port, method, path, body=None, follow=False, max_hops=5):
        """Returns the final Response; with follow, 307s are followed up to
        max_hops times (the last 307 is returned when hops run out)."""
        for _ in range(max_hops + 1):
            c = self._conn(host, port)
            try:
                r = http_request(host, port, method, path, body, self.timeout, conn=c)
            except BaseException:
                self.conns.pop((host, port), None)
                raise
            if r.headers.get("connection", "").lower() == "close":
                c.close()
                self.conns.pop((host, port), None)
            if not follow or r.status != 307:
                return r
            host, port, path = split_location(r.headers["location"])
        return r

    def close(self):
        for c in self.conns.values():
            c.close()
        self.conns = {}


class Node:
    """One kvd process. `id` is the id it is configured with; `host`/`port`
    are where the test reaches its HTTP API."""

    def __init__(self, node_id, host, port, data_dir, log_path, args=(), env=None, prefix=()):
        self.id = node_id
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.args = list(args)
        self.env = env
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", ns]
        self.proc = None
        self.starts = 0

    def start(self, extra_args=()):
        """Launches the process (not waiting for readiness)."""
        assert self.proc is None, "node %s already running" % self.id
        log = open(self.log_path, "ab")
        self.starts += 1
        log.write(b"\n==== start %d ====\n" % self.starts)
        log.flush()
        env = dict(os.environ)
        for k in ("ADDR", "PEERS", "DATA_DIR", "CLUSTER_TOKEN"):
            env.pop(k, None)
        if self.env:
            env.update(self.env)
        try:
            self.proc = subprocess.Popen(
                self.prefix + [KVD_BIN] + self.args + TLS_ARGS + list(extra_args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        finally:
            log.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def exited_by_itself(self):
        """The exit status when the process ended without the test killing
        it (a crash), else None."""
        if self.proc is not None and self.proc.poll() is not None:
            return self.proc.returncode
        return None

    def assert_not_crashed(self):
        rc = self.exited_by_itself()
        if rc is not None:
            raise AssertionError("node %s exited by itself with status %s:\n%s" % (self.id, rc, self.log_tail(80)))

    def wait_ready(self, timeout=10.0):
        """Polls GET /health until it answers 200 'ok'."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(
                    "node %s exited (status %s) before ready:\n%s"
                    % (self.id, self.proc.returncode if self.proc else None, self.log_tail())
                )
            try:
                r = self.get("/health", timeout=1.0)
                if r.status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() >= deadline:
                raise AssertionError("node %s not ready after %.1f s:\n%s" % (self.id, timeout, self.log_tail()))
            time.sleep(0.02)

    def kill(self):
        """SIGKILL and reap; no-op when not running."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("node %s did not die within 30 s of SIGKILL" % self.id)
        self.proc = None

    def restart(self, extra_args=(), timeout=10.0):
        self.kill()
        self.start(extra_args)
        self.wait_ready(timeout)

    def request(self, method, path, body=None, timeout=5.0, headers=None):
        return http_request(self.host, self.port, method, path, body, timeout, headers)

    def get(self, path, timeout=5.0):
        return self.request("GET", path, timeout=timeout)

    def info(self, timeout=2.0):
        """GET /cluster/info as a dict (asserts 200)."""
        r = self.get("/cluster/info", timeout)
        if r.status != 200:
            raise AssertionError("%s /cluster/info -> %r" % (self.id, r))
        return r.json()

    def try_info(self, timeout=1.0):
        """Like info() but None when the node does not answer."""
        try:
            return self.info(timeout)
        except (OSError, http.client.HTTPException, ValueError, AssertionError):
            return None

    def partition(self, allowed_ids):
        r = self.request("POST", "/cluster/partition", json.dumps({"peers": list(allowed_ids)}))
        if r.status != 200:
            raise AssertionError("%s partition -> %r" % (self.id, r))

    def heal(self):
        r = self.request("POST", "/cluster/heal", b"")
        if r.status != 200:
            raise AssertionError("%s heal -> %r" % (self.id, r))

    def stale_get(self, key, timeout=5.0):
        """(status, body bytes) of GET /kv/key?consistency=stale."""
        r = self.get("/kv/%s?consistency=stale" % key, timeout)
        return r.status, r.body

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(data[-lines:])

    def __repr__(self):
        return "Node(%s)" % self.id


class Cluster:
    """n kvd nodes on loopback. mode 'peers': --port P --working-dir D
    --peers :P1,..,:Pn (ids ':port'); mode 'env': ADDR/PEERS/DATA_DIR
    environment (ids '127.0.0.1:port')."""

    def __init__(self, tmpdir, n=5, mode="peers", args=(), id_host="127.0.0.1"):
        self.tmpdir = tmpdir
        self.mode = mode
        ports = free_ports(n)
        if mode == "peers":
            ids = [":%d" % p for p in ports]
        else:
            ids = ["%s:%d" % (id_host, p) for p in ports]
        self.ids = ids
        self.nodes = []
        for i, (nid, port) in enumerate(zip(ids, ports)):
            d = os.path.join(tmpdir, "n%d-%d" % (i, port))
            log = os.path.join(tmpdir, "n%d-%d.log" % (i, port))
            if mode == "peers":
                node = Node(
                    nid,
                    "127.0.0.1",
                    port,
                    d,
                    log,
                    ["--port", str(port), "--working-dir", d, "--peers", ",".join(ids)] + list(args),
                )
            else:
                env = {"ADDR": nid, "DATA_DIR": d}
                if n > 1:
                    env["PEERS"] = ",".join(x for x in ids if x != nid)
                node = Node(nid, "127.0.0.1", port, d, log, list(args), env=env)
            self.nodes.append(node)

    def start(self, timeout=10.0):
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            n.wait_ready(timeout)

    def kill_all(self):
        for n in self.nodes:
            n.kill()

    def by_id(self, nid):
        for n in self.nodes:
            if n.id == nid:
                return n
        raise KeyError(nid)

    def live(self):
        return [n for n in self.nodes if n.alive()]

    def assert_no_crash(self):
        """Raises AssertionError naming any node that exited on its own."""
        for n in self.nodes:
            n.assert_not_crashed()

    def infos(self, nodes=None):
        """{node: info dict or None} for the given nodes (default: live)."""
        nodes = self.live() if nodes is None else nodes
        return {n: n.try_info() for n in nodes}

    def stable_leader(self, nodes=None):
        """(leader node, term) when exactly one of `nodes` (default: live)
        reports role leader and every one of them names it as leader in the
        same term; else None."""
        nodes = self.live() if nodes is None else nodes
        infos = self.infos(nodes)
        if any(i is None for i in infos.values()):
            return None
        leaders = [n for n, i in infos.items() if i["role"] == "leader"]
        if len(leaders) != 1:
            return None
        li = infos[leaders[0]]
        for i in infos.values():
            if i["leader"] != leaders[0].id or i["term"] != li["term"]:
                return None
        return leaders[0], li["term"]

    def wait_leader(self, nodes=None, timeout=10.0, what="a leader all nodes agree on"):
        """Waits for stable_leader(nodes); returns (leader node, term)."""
        return wait_until(lambda: self.stable_leader(nodes), timeout, what=what)

    def partition(self, *groups):
        """Each node may talk only to the nodes of its own group (nodes in no
        group are left as they are)."""
        for g in groups:
            ids = [n.id for n in g]
            for n in g:
                n.partition(ids)

    def heal(self, nodes=None):
        for n in self.nodes if nodes is None else nodes:
            n.heal()

    def put(self, key, value, client=None, retries_s=10.0):
        """PUT via any node, following redirects and retrying 503/transport
        errors for up to retries_s; returns the final Response."""
        c = client or Client()
        deadline = time.monotonic() + retries_s
        try:
            while True:
                nodes = self.live()
                n = random.choice(nodes)
                try:
                    r = c.request(n.host, n.port, "PUT", "/kv/" + key, value, follow=True)
                    if r.status == 200 or time.monotonic() >= deadline:
                        return r
                except (OSError, http.client.HTTPException):
                    if time.monotonic() >= deadline:
                        raise
                time.sleep(0.05)
        finally:
            if client is None:
                c.close()

    def wait_applied(self, nodes=None, timeout=15.0):
        """Waits until every node (default: live) has the same commit index
        and last-applied equal to it; returns that index."""

        def caught_up():
            infos = self.infos(nodes)
            vals = set()
            for i in infos.values():
                if i is None or i["last-applied"] != i["commit-index"]:
                    return None
                vals.add(i["commit-index"])
            return vals.pop() if len(vals) == 1 else None

        return wait_until(caught_up, timeout, what="all nodes applied to the same commit index")

    def logs(self):
        return "\n".join("---- %s (%s) ----\n%s" % (n.id, n.log_path, n.log_tail()) for n in self.nodes)


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


def sanitizer_report(log_path, context=40):
    """The lines around the first sanitizer report in a node's log, or None."""
    try:
        with open(log_path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKS):
            return "\n".join(lines[i:i + context])
    return None


class ClusterCase(unittest.TestCase):
    """Base class: a fresh temp dir per test; every cluster made with
    make_cluster() is SIGKILLed in tearDown and its logs printed on failure."""

    keep_logs_lines = 60

    def setUp(self):
        if not os.path.exists(KVD_BIN):
            self.fail("kvd binary not found at %s (set KVD_BIN)" % KVD_BIN)
        self.tmpdir = tempfile.mkdtemp(prefix="kvd-ctest-")
        self.clusters = []
        self.addCleanup(self._cleanup)

    def make_cluster(self, n=5, mode="peers", args=(), start=True, id_host="127.0.0.1"):
        c = Cluster(self.tmpdir, n, mode, args, id_host)
        self.clusters.append(c)
        if start:
            c.start()
        return c

    def _failed(self):
        """Whether this test has failed so far (cleanups run after the
        failure is recorded; works with Python 3.4+ unittest internals)."""
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        for _, exc in getattr(outcome, "errors", None) or []:  # before 3.11
            if exc is not None:
                return True
        result = getattr(outcome, "result", None)
        for name in ("failures", "errors", "unexpectedSuccesses"):
            for item in getattr(result, name, None) or []:
                test = item[0] if isinstance(item, tuple) else item
                if test is self:
                    return True
        return False

    def _cleanup(self):
        failed = self._failed()
        for c in self.clusters:
            c.kill_all()
        reports = []
        for c in self.clusters:
            for n in c.nodes:
                r = sanitizer_report(n.log_path)
                if r:
                    reports.append("%s (%s):\n%s" % (n.id, n.log_path, r))
        if failed or reports:
            for c in self.clusters:
                sys.stderr.write("\n==== node logs for %s ====\n%s\n" % (self.id(), c.logs()))
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer report from a node:\n" + "\n".join(reports))


def kv_get_body(r):
    """Value of a 200 GET, None for 404 'key not found'; raises otherwise."""
    if r.status == 200:
        return r.body
    if r.status == 404 and r.body == b"key not found\n":
        return None
    raise AssertionError("unexpected GET answer %r" % r)


class Writer(threading.Thread):
    """Background thread writing unique keys `prefix-i` = `v-prefix-i`
    through the cluster (following redirects, retrying transport errors on
    another node) until stop() is called or `count` writes were attempted.
    Records acknowledged (200) keys in self.acked."""

    def __init__(self, cluster, prefix, count=None, timeout=6.0, pause=0.0):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.prefix = prefix
        self.count = count
        self.timeout = timeout
        self.pause = pause
        self.acked = []
        self.failed = []
        self.statuses = {}
        self._stop_ev = threading.Event()

    def stop(self):
        self._stop_ev.set()

    def run(self):
        c = Client(self.timeout)
        i = 0
        while not self._stop_ev.is_set() and (self.count is None or i < self.count):
            key = "%s-%d" % (self.prefix, i)
            nodes = self.cluster.live() or self.cluster.nodes
            n = random.choice(nodes)
            try:
                r = c.request(n.host, n.port, "PUT", "/kv/" + key, "v-" + key, follow=True)
                self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                if r.status == 200:
                    self.acked.append(key)
                else:
                    self.failed.append(key)
                    time.sleep(0.02)
            except (OSError, http.client.HTTPException):
                self.statuses["error"] = self.statuses.get("error", 0) + 1
                self.failed.append(key)
                time.sleep(0.02)
            i += 1
            if self.pause:
                time.sleep(self.pause)
        c.close()


# ---- network namespaces -------------------------------------------------

NETNS_SUBNET = "10.0.42"
NETNS_HOST_IP = NETNS_SUBNET + ".1"  # the test's side of the bridge
NETNS_PORT = 8000


def netns_unavailable():
    """None when network-namespace tests can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return "needs the %s command" % tool
    r = subprocess.run(["ip", "route", "show", NETNS_SUBNET + ".0/24"], capture_output=True, text=True)
    if r.returncode != 0:
        return "ip route failed: %s" % r.stderr.strip()
    if r.stdout.strip():
        return "%s.0/24 is already routed on this host (%s)" % (NETNS_SUBNET, r.stdout.strip())
    return None


def sh(*args, check=True):
    """Runs a command; raises with its stderr when check and it fails."""
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr.strip()))
    return r


class NetnsCluster:
    """n kvd nodes, node i (1-based) in namespace kvd<tag>n<i> with address
    10.0.42.10<i> on bridge kvb<tag>, configured by ADDR/PEERS/DATA_DIR
    (ids '10.0.42.10<i>:8000'). The test reaches them from the host through
    the bridge address 10.0.42.1. Faults are iptables rules inside the
    namespaces; the test's own traffic (10.0.42.1) is never dropped."""

    made = 0  # clusters made by this process, part of the interface names

    def __init__(self, tmpdir, n=5, args=()):
        assert n <= 9
        self.tmpdir = tmpdir
        NetnsCluster.made += 1
        self.tag = "%x%x" % (os.getpid() & 0xFFFF, NetnsCluster.made & 0xFF)
        self.bridge = "kvb" + self.tag
        self.namespaces = []
        self.vethes = []
        self.ips = ["%s.%d" % (NETNS_SUBNET, 100 + i) for i in range(1, n + 1)]
        self.ids = ["%s:%d" % (ip, NETNS_PORT) for ip in self.ips]
        self.nodes = []
        self.args = list(args)
        self.n = n
        self.delayers = []

    def setup(self):
        """Creates bridge, namespaces and veths. Raises PermissionError when
        the very first step (the bridge) is not allowed here, RuntimeError
        on any other failure."""
        r = sh("ip", "link", "add", self.bridge, "type", "bridge", check=False)
        if r.returncode != 0:
            raise PermissionError("ip link add %s type bridge: %s" % (self.bridge, r.stderr.strip()))
        sh("ip", "addr", "add", NETNS_HOST_IP + "/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in range(1, self.n + 1):
            ns = "kvd%sn%d" % (self.tag, i)
            host_if, ns_if = "kv%sh%d" % (self.tag, i), "kv%sn%d" % (self.tag, i)
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
            self.vethes.append(host_if)
            sh("ip", "link", "set", host_if, "master", self.bridge, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", self.ips[i - 1] + "/24", "dev", ns_if)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for i, (nid, ip, ns) in enumerate(zip(self.ids, self.ips, self.namespaces)):
            d = os.path.join(self.tmpdir, "ns%d" % (i + 1))
            log = os.path.join(self.tmpdir, "ns%d.log" % (i + 1))
            env = {"ADDR": nid, "PEERS": ",".join(x for x in self.ids if x != nid), "DATA_DIR": d}
            self.nodes.append(Node(nid, ip, NETNS_PORT, d, log, self.args, env=env,
                                   prefix=["ip", "netns", "exec", ns]))

    def start(self, timeout=15.0):
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            n.wait_ready(timeout)

    def cleanup(self):
        """Kills the nodes, deletes namespaces (with their rules and veth
        ends), the bridge and the delayers. Safe after a partial setup."""
        for n in self.nodes:
            n.kill()
        self.stop_delayers()
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)
        for v in self.vethes:
            sh("ip", "link", "del", v, check=False)
        sh("ip", "link", "del", self.bridge, check=False)

    def ns_of(self, node):
        return self.namespaces[self.nodes.index(node)]

    def iptables(self, node, *rule):
        sh("ip", "netns", "exec", self.ns_of(node), "iptables", *rule)

    def block(self, a, b):
        """Drops every packet between nodes a and b, in both namespaces."""
        for x, y in ((a, b), (b, a)):
            self.iptables(x, "-A", "INPUT", "-s", y.host, "-j", "DROP")
            self.iptables(x, "-A", "OUTPUT", "-d", y.host, "-j", "DROP")

    def partition(self, *groups):
        for gi, g in enumerate(groups):
            for h in groups[gi + 1:]:
                for a in g:
                    for b in h:
                        self.block(a, b)

    def loss(self, probability):
        """Drops each packet between nodes with the given probability, on
        INPUT and OUTPUT of every node."""
        p = "%.3f" % probability
        for n in self.nodes:
            self.iptables(n, "-A", "INPUT", "!", "-s", NETNS_HOST_IP, "-m", "statistic", "--mode",
                          "random", "--probability", p, "-j", "DROP")
            self.iptables(n, "-A", "OUTPUT", "!", "-d", NETNS_HOST_IP, "-m", "statistic", "--mode",
                          "random", "--probability", p, "-j", "DROP")

    def flush(self):
        for n in self.nodes:
            self.iptables(n, "-F")

    def delay(self, nodes, delay_ms, timeout=10.0):
        """Delays every packet that `nodes` send to other nodes by
        delay_ms, with an NFQUEUE delayer process in each namespace (see
        nfqueue_delay); replaces earlier delays; flush() lifts the rules."""
        self.stop_delayers()
        for n in nodes:
            ns = self.ns_of(n)
            p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__),
                                  "nfqueue-delay", "0", str(int(delay_ms))],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            self.delayers.append(p)
            import select

            r, _, _ = select.select([p.stdout], [], [], timeout)
            line = p.stdout.readline() if r else b""
            if b"bound" not in line:
                p.kill()
                raise RuntimeError("nfqueue delayer did not start in %s: %r %r" % (ns, line, p.stderr.read()))
            self.iptables(n, "-A", "OUTPUT", "-m", "iprange", "--dst-range",
                          "%s.101-%s.199" % (NETNS_SUBNET, NETNS_SUBNET),
                          "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass")

    def stop_delayers(self):
        for p in self.delayers:
            p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
            p.stdout.close()
            p.stderr.close()
        self.delayers = []

    def logs(self):
        return "\n".join("---- %s (%s) ----\n%s" % (n.id, n.log_path, n.log_tail()) for n in self.nodes)

    # The same queries as Cluster.
    live = Cluster.live
    infos = Cluster.infos
    stable_leader = Cluster.stable_leader
    wait_leader = Cluster.wait_leader
    wait_applied = Cluster.wait_applied
    put = Cluster.put
    by_id = Cluster.by_id
    kill_all = Cluster.kill_all
    assert_no_crash = Cluster.assert_no_crash


# ---- linearizability: random clients, a nemesis, lincheck ----------------
#
# Outcomes recorded for lincheck: a write answered 200 is ok; a write that
# certainly did not reach a leader (connection refused, or the last hop still
# a 307) failed; a write answered `503 no leader` was not accepted at all
# (API.md §2), so it failed too; any other write (other 503s, timeout, reset)
# is unknown, i.e. possibly applied. A read answered 200 or 404 `key not
# found` is ok; any other read failed (dropped).

DURATION_S = float(os.environ.get("KVD_LIN_SECONDS", "20"))
KEYS = ["x", "y", "z", "w"]
CLIENTS = 5


def now_us():
    return time.monotonic_ns() // 1000


def http_heal_all(c):
    def heal():
        for n in c.live():
            n.heal()

    return heal


def http_partition(groups):
    """Partition through POST /cluster/partition on every live node."""
    for g in groups:
        ids = [n.id for n in g]
        for n in g:
            if n.alive():
                n.partition(ids)


class History:
    """The recorded operations, as lincheck text lines; thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lines = []
        self.counts = {}

    def add(self, client, kind, key, value, inv, ret, outcome):
        with self.lock:
            self.lines.append("%d %s %s %s %d %d %s" % (client, kind, key, value or "-", inv, ret, outcome))
            k = (kind, outcome)
            self.counts[k] = self.counts.get(k, 0) + 1


class LinClient(threading.Thread):
    """One client: random PUT (unique values), GET and DELETE on KEYS,
    following up to 3 redirects; a new client id after an unknown outcome."""

    def __init__(self, num, cluster, history, stop_ev, seed):
        super().__init__(daemon=True)
        self.num = num
        self.cluster = cluster
        self.history = history
        self.stop_ev = stop_ev
        self.rng = random.Random(seed)
        self.gen = 0
        self.seq = 0
        self.errors = []

    def client_id(self):
        return self.num * 1000 + self.gen

    def run(self):
        cl = Client(timeout=4.0)
        target = self.rng.choice(self.cluster.nodes)
        while not self.stop_ev.is_set():
            key = self.rng.choice(KEYS)
            p = self.rng.random()
            if p < 0.45:
                kind, method = "put", "PUT"
                self.seq += 1
                value = "c%d-%d" % (self.num, self.seq)
            elif p < 0.85:
                kind, method, value = "get", "GET", None
            else:
                kind, method, value = "delete", "DELETE", None
            inv = now_us()
            hops = 0
            host, port, path = target.host, target.port, "/kv/" + key
            outcome, got = None, None
            while True:
                try:
                    r = cl.request(host, port, method, path, value, follow=False)
                except ConnectionRefusedError:
                    outcome = "fail"
                    target = self.rng.choice(self.cluster.nodes)
                    break
                except (OSError, http.client.HTTPException):
                    outcome = "fail" if kind == "get" else "unknown"
                    target = self.rng.choice(self.cluster.nodes)
                    break
                if r.status == 307 and hops < 3:
                    hops += 1
                    loc = r.headers.get("location", "")
                    host, port, path = split_location(loc)
                    continue
                if kind == "get":
                    if r.status == 200:
                        outcome, got = "ok", r.body.decode()
                    elif r.status == 404 and r.body == b"key not found\n":
                        outcome = "ok"
                    else:
                        outcome = "fail"
                else:
                    if r.status == 200:
                        outcome = "ok"
                    elif r.status == 307:
                        outcome = "fail"
                    elif r.status == 503 and r.body == b"no leader\n":
                        # API.md: "503 no leader means the write was not
                        # accepted at all".
                        outcome = "fail"
                    elif r.status == 503:
                        outcome = "unknown"
                    else:
                        self.errors.append((kind, key, value, r))
                        outcome = "unknown"
                if r.status in (503, 307):
                    target = self.rng.choice(self.cluster.nodes)
                break
            ret = now_us()
            if kind == "get":
                self.history.add(self.client_id(), kind, key, got, inv, ret, outcome)
            else:
                self.history.add(self.client_id(), kind, key, value, inv, ret, outcome)
            if outcome == "unknown":
                self.gen += 1
                cl.close()
            if outcome != "ok":
                time.sleep(0.05)
        cl.close()


class Nemesis(threading.Thread):
    """Every 0.7-1.8 s: kill a node (the leader half of the time; at most 2
    dead), restart a dead one, crash all live nodes at once, partition into
    1|4 or 2|3, heal, or one of `extra`. Once, at half of `duration`, all
    nodes are SIGKILLed together and restarted."""

    def __init__(self, cluster, stop_ev, seed, partition_fn=None, heal_fn=None, extra=None):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.partition_fn = partition_fn or http_partition
        self.heal_fn = heal_fn or http_heal_all(cluster)
        self.extra = extra or {}  # name -> callable(rng) -> description
        self.duration = DURATION_S
        self.stop_ev = stop_ev
        self.rng = random.Random(seed)
        self.actions = []
        self.errors = []

    def act(self):
        c = self.cluster
        c.assert_no_crash()
        dead = [n for n in c.nodes if not n.alive()]
        live = [n for n in c.nodes if n.alive()]
        choices = ["partition", "heal", "restart" if dead else "partition"]
        if len(dead) < 2:
            choices += ["kill", "kill"]
        if not dead:
            choices.append("crash-all")
        choices += list(self.extra)
        a = self.rng.choice(choices)
        if a in self.extra:
            self.actions.append(self.extra[a](self.rng))
        elif a == "crash-all":
            for n in live:
                n.proc.kill()
            for n in live:
                n.kill()
            for n in live:
                n.start()
            for n in live:
                n.wait_ready(10)
            self.actions.append("crash-all")
        elif a == "kill":
            # Prefer the leader half of the time.
            n = self.rng.choice(live)
            if self.rng.random() < 0.5:
                for x in live:
                    i = x.try_info(0.5)
                    if i and i["role"] == "leader":
                        n = x
                        break
            n.kill()
            self.actions.append("kill %s" % n.id)
        elif a == "restart":
            n = self.rng.choice(dead)
            n.start()
            n.wait_ready(10)
            self.actions.append("restart %s" % n.id)
        elif a == "partition":
            nodes = list(c.nodes)
            self.rng.shuffle(nodes)
            cut = self.rng.choice([1, 2])
            groups = [nodes[:cut], nodes[cut:]]
            self.partition_fn(groups)
            self.actions.append("partition %s" % [[n.id for n in g] for g in groups])
        else:
            self.heal_fn()
            self.actions.append("heal")

    def crash_all(self):
        """Restarts the dead, then SIGKILLs every node at once and restarts
        them all."""
        for n in self.cluster.nodes:
            if not n.alive():
                n.start()
                n.wait_ready(10)
        for n in self.cluster.nodes:
            n.proc.kill()
        for n in self.cluster.nodes:
            n.kill()
            n.start()
        for n in self.cluster.nodes:
            n.wait_ready(10)
        self.actions.append("crash-all (forced)")

    def run(self):
        t0 = time.monotonic()
        crashed = False
        while not self.stop_ev.wait(self.rng.uniform(0.7, 1.8)):
            try:
                if not crashed and time.monotonic() - t0 > self.duration / 2:
                    crashed = True
                    self.crash_all()
                    continue
                self.act()
            except (OSError, http.client.HTTPException, AssertionError) as e:
                self.errors.append(repr(e))


def run_under_nemesis(case, c, clients, nemesis, stop_clients, stop_nemesis, duration, heal_fn=None,
                      on_running=None):
    """Starts the client threads and the nemesis, lets them run for
    duration seconds (on_running() is called once they run), stops the
    nemesis, then recovers the cluster (every node up, healed, a leader)
    while the clients go on for 2 s, and stops and joins the clients."""
    nemesis.duration = duration
    for t in clients:
        t.start()
    nemesis.start()
    if on_running is not None:
        on_running()
    time.sleep(duration)
    stop_nemesis.set()
    nemesis.join(30)
    case.assertEqual(nemesis.errors, [], "nemesis: %r" % nemesis.actions)
    c.assert_no_crash()
    for n in c.nodes:
        if not n.alive():
            n.start()
            n.wait_ready()
    (heal_fn or http_heal_all(c))()
    c.wait_leader(timeout=10, what="a leader after the nemesis stopped")
    time.sleep(2.0)
    stop_clients.set()
    for t in clients:
        t.join(30)
    case.assertFalse(any(t.is_alive() for t in clients), "clients hung")


def check_linearizable(case, c, partition_fn=None, heal_fn=None, extra=None, duration=None):
    """Runs CLIENTS random clients against cluster c for `duration` seconds
    (default KVD_LIN_SECONDS or 20) while a Nemesis kills, restarts,
    crashes and partitions nodes (partition_fn(groups) / heal_fn(), default
    over HTTP; extra nemesis actions by name), then recovers the cluster and
    asserts with lincheck that the history is linearizable."""
    duration = DURATION_S if duration is None else duration
    lincheck = lincheck_bin()
    if not os.path.exists(lincheck):
        case.fail("lincheck not found at %s (build it: cmake --build build --target lincheck)" % lincheck)
    c.wait_leader(timeout=10)
    seed = int(os.environ.get("KVD_LIN_SEED", str(random.randrange(1 << 30))))
    history = History()
    stop_clients = threading.Event()
    stop_nemesis = threading.Event()
    clients = [LinClient(i + 1, c, history, stop_clients, seed + i) for i in range(CLIENTS)]
    nemesis = Nemesis(c, stop_nemesis, seed, partition_fn, heal_fn, extra)
    run_under_nemesis(case, c, clients, nemesis, stop_clients, stop_nemesis, duration, heal_fn)
    path = os.path.join(case.tmpdir, "history.txt")
    with open(path, "w") as f:
        f.write("# seed %d\n# nemesis: %s\n" % (seed, "; ".join(nemesis.actions)))
        f.write("\n".join(history.lines) + "\n")
    msg = "seed %d, counts %r, nemesis %r" % (seed, history.counts, nemesis.actions)
    if os.environ.get("KVD_LIN_VERBOSE"):
        sys.stderr.write("\n%s\n" % msg)
    for t in clients:
        case.assertEqual(t.errors, [], "unexpected answers; " + msg)
    case.assertEqual(nemesis.errors, [], msg)
    case.assertGreaterEqual(history.counts.get(("put", "ok"), 0), 30, "too little progress; " + msg)
    case.assertGreaterEqual(history.counts.get(("get", "ok"), 0), 30, "too little progress; " + msg)
    p = subprocess.run([lincheck, path], capture_output=True, text=True, timeout=240)
    if p.returncode != 0:
        keep = "/tmp/kvd-lincheck-history-%d-%d.txt" % (os.getpid(), seed)
        shutil.copy(path, keep)
        case.fail("lincheck exit %d: %s %s (history kept in %s); %s"
                  % (p.returncode, p.stdout.strip(), p.stderr.strip(), keep, msg))
    case.assertIn("linearizable", p.stdout)


# ---- NFQUEUE delayer ------------------------------------------------------
#
# This kernel has no tc netem, so packet delay is done in user space: an
# iptables rule sends a namespace's outgoing packets to an NFQUEUE, and
# `python3 cluster.py nfqueue-delay QUEUE DELAY_MS` (run inside the
# namespace) holds each packet DELAY_MS before accepting it. It speaks the
# nfnetlink_queue protocol over a raw netlink socket (no libnetfilter_queue).
# Packets are released in arrival order (a constant delay keeps FIFO order).

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2


def _nlattr(atype, payload):
    import struct

    n = 4 + len(payload)
    return struct.pack("=HH", n, atype) + payload + b"\0" * ((4 - n % 4) % 4)


def _nfq_msg(msg, queue, attrs, seq, flags=NLM_F_REQUEST):
    import struct

    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


def nfqueue_delay(queue, delay_ms):
    """Runs forever: accepts each packet of NFQUEUE `queue` delay_ms after
    it arrived."""
    import collections
    import select
    import struct

    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((0, 0))
    seq = 1
    s.send(_nfq_msg(NFQNL_MSG_CONFIG, queue, [_nlattr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0))],
                    seq, NLM_F_REQUEST | NLM_F_ACK))
    seq += 1
    s.send(_nfq_msg(NFQNL_MSG_CONFIG, queue, [
        _nlattr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)),
        _nlattr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 65536)),
    ], seq, NLM_F_REQUEST | NLM_F_ACK))
    pending = collections.deque()
    delay = delay_ms / 1000.0
    sys.stdout.write("nfqueue %d bound, delay %d ms\n" % (queue, delay_ms))
    sys.stdout.flush()
    while True:
        timeout = None
        if pending:
            timeout = max(0.0, pending[0][0] - time.monotonic())
        r, _, _ = select.select([s], [], [], timeout)
        if r:
            try:
                data = s.recv(1 << 20)
            except OSError:  # ENOBUFS: the kernel dropped some; go on
                data = b""
            off = 0
            while off + 16 <= len(data):
                ln, mtype, _, _, _ = struct.unpack_from("=IHHII", data, off)
                if ln < 16:
                    break
                if mtype == NLMSG_ERROR:
                    err = struct.unpack_from("=i", data, off + 16)[0]
                    if err != 0:
                        raise OSError(-err, "nfqueue config refused")
                elif mtype == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    a = off + 20
                    end = off + ln
                    while a + 4 <= end:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if atype & 0x7FFF == NFQA_PACKET_HDR:
                            pid = struct.unpack_from("!I", data, a + 4)[0]
                            pending.append((time.monotonic() + delay, pid))
                            break
                        a += (alen + 3) & ~3
                off += (ln + 3) & ~3
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, pid = pending.popleft()
            seq += 1
            s.send(_nfq_msg(NFQNL_MSG_VERDICT, queue, [_nlattr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pid))],
                            seq))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "nfqueue-delay":
        nfqueue_delay(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.stderr.write("usage: cluster.py nfqueue-delay QUEUE DELAY_MS\n")
        sys.exit(2)
