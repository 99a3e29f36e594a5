"""test_install.py: `cmake --install` of the build that KVD_BIN belongs to,
into a temporary prefix: the five programs in bin/ (and they run), man
pages in share/man/man1, docs and the service examples in share/doc/kvd,
kvctl's bash completion in share/bash-completion/completions (and it
completes). Also checks that kvctl's man page and --help name the same
commands and flags, and that ./run.sh builds every program.

With KVD_INSTALL_LIST=FILE the installed files are written to FILE."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from kvdtest import KVD_BIN

BUILD = os.path.dirname(os.path.abspath(KVD_BIN))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROGRAMS = ["kvd", "kvctl", "kvdump", "kvload", "kvbench"]
COMMANDS = ["get", "put", "del", "ls", "watch", "txn", "status", "members", "transfer", "snapshot", "leader"]


class TestInstall(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(os.path.join(BUILD, "CMakeCache.txt")):
            self.skipTest("%s is not a CMake build directory" % BUILD)
        self.prefix = tempfile.mkdtemp(prefix="kvd-install-")
        self.addCleanup(shutil.rmtree, self.prefix, True)

    def test_install_into_prefix(self):
        p = subprocess.run(["cmake", "--install", BUILD, "--prefix", self.prefix], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        files = sorted(os.path.relpath(os.path.join(d, f), self.prefix)
                       for d, _, fs in os.walk(self.prefix) for f in fs)
        out = os.environ.get("KVD_INSTALL_LIST")
        if out:
            with open(out, "w") as f:
                f.write("\n".join(files) + "\n")
        for prog in PROGRAMS:
            path = os.path.join(self.prefix, "bin", prog)
            self.assertIn("bin/" + prog, files)
            self.assertTrue(os.access(path, os.X_OK), path)
        for page in ("kvctl", "kvd", "kvdump", "kvload", "kvbench"):
            self.assertIn("share/man/man1/%s.1" % page, files)
        for doc in ("README.md", "kvctl.md", "deployment.md", "api.md", "tools.md", "examples/kvd.service",
                    "examples/kvd.env.example"):
            self.assertIn("share/doc/kvd/" + doc, files)
        self.assertIn("share/bash-completion/completions/kvctl", files)
        # The installed programs run from the prefix.
        for prog, args in (("kvctl", ["--help"]), ("kvdump", ["--help"]), ("kvload", ["--help"]),
                           ("kvbench", ["--help"])):
            r = subprocess.run([os.path.join(self.prefix, "bin", prog)] + args, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=10)
            self.assertEqual(r.returncode, 0, (prog, r.stderr))
            self.assertIn(b"usage", r.stdout + r.stderr)
        r = subprocess.run([os.path.join(self.prefix, "bin", "kvd"), "--no-such-flag"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=10)
        self.assertEqual(r.returncode, 2)
        # The completion file completes commands, flags and verbs.
        comp = os.path.join(self.prefix, "share/bash-completion/completions/kvctl")
        for words, want in ((["kvctl", "st"], "status"), (["kvctl", "put", "k", "--if-"], "--if-absent --if-match"),
                            (["kvctl", "members", ""], "add remove"), (["kvctl", "--js"], "--json")):
            script = 'source "%s"; COMP_WORDS=(%s); COMP_CWORD=%d; _kvctl; echo "${COMPREPLY[*]}"' % (
                comp, " ".join("'%s'" % w for w in words), len(words) - 1)
            r = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
            self.assertEqual(sorted(r.stdout.decode().split()), sorted(want.split()), (words, r.stderr))

    def test_man_page_matches_help(self):
        kvctl = os.path.join(BUILD, "tools", "kvctl")
        help_text = subprocess.run([kvctl, "--help"], stdout=subprocess.PIPE, timeout=10).stdout.decode()
        with open(os.path.join(ROOT, "docs", "man", "kvctl.1")) as f:
            man = f.read().replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace("\\fP", "")
        flags = set(re.findall(r"--[a-z][a-z-]+", help_text))
        for cmd in COMMANDS:
            self.assertIn(cmd + " ", help_text)
            self.assertRegex(man, r"\n\.(TP\n\.)?B[IR]? \"?%s\b" % cmd, "man page lacks %s" % cmd)
            sub = subprocess.run([kvctl, cmd, "--help"], stdout=subprocess.PIPE, timeout=10).stdout.decode()
            flags |= set(re.findall(r"--[a-z][a-z-]+", sub))
        # The man page also names the server's --cluster-token (what --token
        # must match); every other flag it names is kvctl's.
        man_flags = set(re.findall(r"--[a-z][a-z-]+", man)) - {"--cluster-token"}
        self.assertEqual(flags - {"--help"}, man_flags - {"--help"})

    def test_run_sh_builds_every_program(self):
        with open(os.path.join(ROOT, "run.sh")) as f:
            text = f.read()
        line = [l for l in text.splitlines() if l.startswith("cmake --build")]
        self.assertEqual(len(line), 1, line)
        for prog in PROGRAMS:
            self.assertIn(" " + prog, line[0])


if __name__ == "__main__":
    unittest.main()
