"""The web console (API.md §14): /ui/ is served by every node from the
binary, and works in a real browser.

ConsolePage checks the HTTP side with the standard library (files, types,
caching, 308/404/405, nothing fetched from outside the node).

ConsoleBrowser starts a 3-node cluster and runs tests/browser/console_test.mjs:
puppeteer-core driving Debian's chromium (headless) through the page:
members table with the leader marked, create / edit / conflicting edit (412)
/ delete of a key, a key written by another client appearing through the
watch within a second, a follower's page, the leader SIGKILLed and the new
one marked, a phone-width screen and keyboard use, no console errors.
Screenshots of every step go to build/console-screenshots/ (or
$KVD_CONSOLE_OUT). It skips, saying why, when chromium, node or the npm
packages (tools/deps.sh installs them) are missing.
"""

import json
import os
import re
import shutil
import subprocess
import unittest

from cluster import ROOT, ClusterCase, http_request

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class ConsolePage(ClusterCase):
    def setUp(self):
        super().setUp()
        self.c = self.make_cluster(n=1)
        self.n = self.c.nodes[0]

    def get(self, path, headers=None, method="GET"):
        return http_request(self.n.host, self.n.port, method, path, headers=headers)

    def test_files_types_and_caching(self):
        r = self.get("/ui/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["content-type"], "text/html; charset=utf-8")
        self.assertIn(b"<title>kvd console</title>", r.body)
        etag = r.headers["etag"]
        self.assertRegex(etag, r'^"[0-9a-f]{16}"$')
        self.assertEqual(r.headers["cache-control"], "no-cache")
        r = self.get("/ui/", headers={"If-None-Match": etag})
        self.assertEqual(r.status, 304)
        self.assertEqual(r.body, b"")
        for name, ctype in (("console.js", "text/javascript; charset=utf-8"),
                            ("console.css", "text/css; charset=utf-8"),
                            ("index.html", "text/html; charset=utf-8")):
            r = self.get("/ui/" + name)
            self.assertEqual(r.status, 200, name)
            self.assertEqual(r.headers["content-type"], ctype)
            self.assertGreater(len(r.body), 500)
        r = self.get("/ui/console.js", method="HEAD")
        self.assertEqual(r.status, 200)
        self.assertGreater(int(r.headers["content-length"]), 500)

    def test_redirect_missing_and_methods(self):
        r = self.get("/ui")
        self.assertEqual(r.status, 308)
        self.assertEqual(r.headers["location"], "/ui/")
        r = self.get("/ui/nope.js")
        self.assertEqual((r.status, r.body), (404, b"not found\n"))
        r = self.get("/ui/", method="POST")
        self.assertEqual((r.status, r.body), (405, b"method not allowed\n"))
        self.assertEqual(r.headers["allow"], "GET, HEAD")

    def test_nothing_from_outside_the_node(self):
        for name in ("", "console.js", "console.css"):
            body = self.get("/ui/" + name).body.decode()
            # No absolute or protocol-relative URL in src/href/url()/import.
            self.assertIsNone(re.search(r'(src|href)\s*=\s*"(https?:)?//', body), name)
            self.assertIsNone(re.search(r"url\(\s*['\"]?(https?:)?//", body), name)
            self.assertIsNone(re.search(r"@import", body), name)

    def test_cluster_info_readable_by_other_members_consoles(self):
        r = self.get("/cluster/info")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["access-control-allow-origin"], "*")


def browser_missing():
    if not os.path.exists(CHROMIUM):
        return "chromium not installed (tools/deps.sh installs it)"
    if shutil.which("node") is None:
        return "node not installed"
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "puppeteer-core")):
        return "puppeteer-core not installed (cd tests/browser && npm ci)"
    return None


@unittest.skipIf(browser_missing(), browser_missing() or "")
class ConsoleBrowser(ClusterCase):
    def test_console_in_chromium(self):
        c = self.make_cluster(n=3)
        c.wait_leader()
        out = os.environ.get("KVD_CONSOLE_OUT") or os.path.join(ROOT, "build", "console-screenshots")
        shutil.rmtree(out, ignore_errors=True)
        nodes = ",".join("%s=http://%s:%d" % (n.id, n.host, n.port) for n in c.nodes)
        pids = ",".join("%s=%d" % (n.id, n.proc.pid) for n in c.nodes)
        p = subprocess.run(["node", os.path.join(BROWSER_DIR, "console_test.mjs"), "--nodes", nodes,
                            "--pids", pids, "--out", out, "--chromium", CHROMIUM],
                           cwd=BROWSER_DIR, capture_output=True, text=True, timeout=150)
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        self.assertTrue(lines, "no result from the browser test; stderr:\n" + p.stderr[-3000:])
        result = json.loads(lines[-1])
        for s in result.get("steps", []):
            print("    [console] %-55s %5d ms  %s" % (s["step"], s["ms"],
                  " ".join("%s=%s" % (k, v) for k, v in s.items() if k not in ("step", "ms"))))
        self.assertTrue(result["ok"], "%s\nstderr:\n%s" % (result.get("error"), p.stderr[-3000:]))
        self.assertEqual(p.returncode, 0)
        self.assertEqual(len(result["steps"]), 8)
        for s in result["steps"]:
            path = os.path.join(out, s["screenshot"])
            self.assertGreater(os.path.getsize(path), 5000, path)
        watch = [s for s in result["steps"] if "appeared_ms" in s][0]
        self.assertLess(watch["appeared_ms"], 1000)


if __name__ == "__main__":
    unittest.main()
