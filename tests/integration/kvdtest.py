"""kvdtest: shared helpers for the kvd integration tests.

Every test starts real kvd processes on loopback, each in a fresh temporary
data directory and on a free port, and talks to them over raw HTTP (no
redirect is ever followed). Standard library only.

- KVD_BIN: path of the kvd binary (default build/api/kvd under the repo root).
- KvdTestCase: a unittest.TestCase whose start_node() starts a node that is
  killed and whose data directory is removed when the test ends; when the test
  fails, the tail of every node's captured stderr is printed.
- Node: one kvd process (start, wait_ready, stop, kill, request).
- RawConn: one TCP connection with a byte-exact HTTP/1.1 response reader, for
  keep-alive, pipelining, chunked bodies and malformed requests.

Every wait is bounded by a timeout; nothing sleeps unbounded.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KVD_BIN = os.environ.get("KVD_BIN") or os.path.join(REPO_ROOT, "build", "api", "kvd")
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"

READY_TIMEOUT = 15.0  # seconds a node may take to answer GET /health
REQUEST_TIMEOUT = 15.0  # seconds one HTTP request may take


def free_port():
    """Returns a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value (returned) or timeout (s)
    passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Response:
    """One HTTP response: status (int), reason, headers (list of (name,
    value) as received), body (bytes)."""

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        """Value of the first header called name (case-insensitive)."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def content_type(self):
        return self.header("Content-Type")

    def __repr__(self):
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        return "<Response %d %s %r body=%r>" % (self.status, self.reason, self.headers, body)


class RawConn:
    """One client TCP connection to 127.0.0.1:port with an HTTP/1.1 response
    parser that keeps unread bytes for the next (pipelined) response."""

    def __init__(self, port, timeout=REQUEST_TIMEOUT, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def _read_line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise ValueError("response line too long")
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, head_only=False):
        """Reads one response (Content-Length or chunked body). head_only:
        the response to a HEAD request (no body)."""
        line = self._read_line().decode("latin-1")
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError("bad status line %r" % line)
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        while True:
            h = self._read_line().decode("latin-1")
            if h == "":
                break
            k, _, v = h.partition(":")
            headers.append((k.strip(), v.strip()))
        resp = Response(status, reason, headers, b"")
        if head_only or status in (204, 304) or 100 <= status < 200:
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = b""
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                if size == 0:
                    while self._read_line() != b"":
                        pass
                    break
                body += self._read_exact(size)
                self._read_line()
            resp.body = body
        elif resp.header("Content-Length") is not None:
            resp.body = self._read_exact(int(resp.header("Content-Length")))
        else:  # body until close
            while True:
                try:
                    self._fill()
                except ConnectionError:
                    break
            resp.body, self.buf = self.buf, b""
        return resp

    def request(self, method, path, body=None, headers=None):
        """Sends one request (Content-Length when body is given) and reads
        its response."""
        self.send(build_request(method, path, body, headers))
        return self.read_response(head_only=(method == "HEAD"))

    def closed_by_peer(self, timeout=5.0):
        """True when the server closes the connection (EOF or reset) within
        timeout seconds, having sent nothing more."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        if data:
            self.buf += data
            return False
        return True


def build_request(method, path, body=None, headers=None):
    """Bytes of one HTTP/1.1 request. body: bytes or str or None."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(path, str):
        path = path.encode("latin-1")
    lines = [method.encode("ascii") + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    hdrs = dict(headers or {})
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k in hdrs):
        hdrs["Content-Length"] = str(len(body))
    for k, v in hdrs.items():
        lines.append(("%s: %s" % (k, v)).encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


class Node:
    """One kvd process. args: extra command-line arguments; port and data_dir
    are passed as --port and --working-dir unless pass_port / pass_data_dir
    is False. env: extra environment variables (None value: removed)."""

    def __init__(self, tmp_root, port=None, data_dir=None, args=(), env=None, pass_port=True,
                 pass_data_dir=True, cwd=None, name="node"):
        self.port = port or free_port()
        self.data_dir = data_dir or os.path.join(tmp_root, "data-%s-%d" % (name, self.port))
        self.args = list(args)
        self.env = dict(env or {})
        self.pass_port = pass_port
        self.pass_data_dir = pass_data_dir
        self.cwd = cwd or tmp_root
        self.name = name
        self.stderr_path = os.path.join(tmp_root, "%s-%d.stderr" % (name, self.port))
        self.proc = None
        self.starts = 0

    def command(self):
        cmd = [KVD_BIN]
        if self.pass_port:
            cmd += ["--port", str(self.port)]
        if self.pass_data_dir:
            cmd += ["--working-dir", self.data_dir]
        return cmd + self.args

    def start(self, wait=True):
        """Starts the process (stderr appended to stderr_path) and, when wait,
        waits until GET /health answers 200."""
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        env = dict(os.environ)
        for k in ("DATA_DIR", "ADDR", "PEERS", "CLUSTER_TOKEN"):
            env.pop(k, None)
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        self.starts += 1
        with open(self.stderr_path, "ab") as err:
            err.write(("=== start %d: %s\n" % (self.starts, " ".join(self.command()))).encode())
            err.flush()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, cwd=self.cwd, env=env)
        if wait:
            self.wait_ready()
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Waits until GET /health answers 200 ok; fails at once if the process
        exits."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("kvd exited with status %s before it was ready; stderr:\n%s"
                                     % (self.proc.returncode, self.stderr_tail()))
            try:
                r = self.request("GET", "/health", timeout=2.0)
                if r.status == 200:
                    return
                last = r
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("kvd not ready after %.1f s (last: %r); stderr:\n%s"
                             % (timeout, last, self.stderr_tail()))

    def signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def stop(self, timeout=5.0):
        """SIGTERM, then waits up to timeout seconds; returns the exit status
        (None if it did not exit in time: it is then SIGKILLed)."""
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        """SIGKILL and reaps the process."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def wait_exit(self, timeout):
        """Waits for the process to exit; returns its status or None."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, lines=60):
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def request(self, method, path, body=None, headers=None, timeout=REQUEST_TIMEOUT):
        """One request on a new connection (never follows redirects)."""
        with RawConn(self.port, timeout=timeout) as c:
            return c.request(method, path, body, headers)

    def conn(self, timeout=REQUEST_TIMEOUT):
        return RawConn(self.port, timeout=timeout)

    def put(self, key, value):
        return self.request("PUT", "/kv/" + key, value)

    def get(self, key, query=""):
        return self.request("GET", "/kv/" + key + query)

    def delete(self, key):
        return self.request("DELETE", "/kv/" + key)


def run_kvd(args, env=None, cwd=None, timeout=10.0):
    """Runs kvd to completion (for flags that make it exit). Returns
    (returncode, stdout, stderr) as text; fails if it still runs after
    timeout seconds (it is then killed)."""
    full_env = dict(os.environ)
    for k in ("DATA_DIR", "ADDR", "PEERS", "CLUSTER_TOKEN"):
        full_env.pop(k, None)
    full_env.update(env or {})
    p = subprocess.Popen([KVD_BIN] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=full_env, cwd=cwd)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("kvd %s still running after %.1f s; stderr: %s"
                             % (" ".join(args), timeout, err.decode("utf-8", "replace")))
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


class KvdTestCase(unittest.TestCase):
    """Base class: a fresh temporary directory per test, nodes killed and the
    directory removed at the end, node stderr shown when the test fails."""

    def setUp(self):
        if not os.access(KVD_BIN, os.X_OK):
            self.fail("kvd binary not found at %s (set KVD_BIN or build first)" % KVD_BIN)
        self.tmp = tempfile.mkdtemp(prefix="kvd-itest-")
        self.nodes = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for n in self.nodes:
            n.kill()
        outcome = getattr(self, "_outcome", None)
        failed = outcome is not None and not outcome.success
        if failed:
            for n in self.nodes:
                sys.stderr.write("\n----- stderr of %s (port %d, %s) -----\n%s\n"
                                 % (n.name, n.port, n.stderr_path, n.stderr_tail(80)))
        shutil.rmtree(self.tmp, ignore_errors=True)

    def new_node(self, **kw):
        """A Node in this test's temporary directory, not started."""
        n = Node(self.tmp, name="n%d" % len(self.nodes), **kw)
        self.nodes.append(n)
        return n

    def start_node(self, **kw):
        """Starts a node and waits until it is ready."""
        return self.new_node(**kw).start()

    def assertText(self, r, status, body):
        """r has this status, exactly this body and the text Content-Type."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.assertEqual((r.status, r.body), (status, body), r)
        self.assertEqual(r.content_type, TEXT, r)

    def assertPutOk(self, node, key, value):
        r = node.put(key, value)
        self.assertText(r, 200, b"")

    def assertValue(self, node, key, value):
        if isinstance(value, str):
            value = value.encode("utf-8")
        r = node.get(key)
        self.assertText(r, 200, value)
