"""Disk full (API.md §6): writes fail with 507 insufficient storage, reads
keep working, nothing acknowledged is lost, writes resume when space returns.

The data directory lives on a small tmpfs mounted for the test (needs root
and permission to mount; skipped otherwise). The disk is filled by a filler
file next to the data directory."""

import errno
import os
import signal
import subprocess
import time
import unittest

from kvdtest import KvdTestCase

MOUNT_SIZE = "32m"
BIG = "x" * 65536  # needs fresh pages: cannot fit in the slack of a full disk


class DiskFullTest(KvdTestCase):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a small tmpfs")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + MOUNT_SIZE, "tmpfs", self.mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        if r.returncode != 0:
            self.skipTest("cannot mount tmpfs: %s" % r.stdout.decode(errors="replace").strip())
        self.addCleanup(self._unmount)
        self.filler = os.path.join(self.mnt, "filler")
        self.node = self.start_node(data_dir=os.path.join(self.mnt, "data"))
        self.acked = {}
        for i in range(20):
            self.assertPutOk(self.node, "pre%d" % i, "before the disk filled %d" % i)
            self.acked["pre%d" % i] = "before the disk filled %d" % i

    def _unmount(self):
        for n in self.nodes:  # the mount is busy while a node runs
            n.kill()
        if subprocess.run(["umount", self.mnt], timeout=10).returncode != 0:
            subprocess.run(["umount", "-l", self.mnt], timeout=10)

    def _fill_disk(self):
        with open(self.filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)

    def _free_disk(self):
        os.unlink(self.filler)

    def _assert_acked_present(self):
        for k, v in self.acked.items():
            self.assertValue(self.node, k, v)

    def test_disk_full_write_gets_507(self):
        self._fill_disk()
        self.assertText(self.node.put("big", BIG), 507, "insufficient storage\n")
        self.assertTrue(self.node.running(), "kvd exited on a full disk")

    def test_disk_full_reads_keep_working(self):
        self._fill_disk()
        self.node.put("big", BIG)
        self._assert_acked_present()
        self.assertText(self.node.get("never"), 404, "key not found\n")
        self.assertText(self.node.get("pre1", "?consistency=stale"), 200, b"before the disk filled 1")

    def test_disk_full_writes_resume_when_space_returns(self):
        self._fill_disk()
        self.node.put("big", BIG)
        self._free_disk()
        deadline = time.monotonic() + 10
        while True:
            r = self.node.put("big", BIG)
            if r.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertText(r, 200, b"")
        self.assertValue(self.node, "big", BIG)
        self._assert_acked_present()

    def test_disk_full_loses_no_acknowledged_write(self):
        self._fill_disk()
        for i in range(5):
            self.node.put("big%d" % i, BIG)
        self._free_disk()
        self.node.signal(signal.SIGTERM)
        if self.node.wait_exit(6.5) is None:
            self.node.kill()
        self.node.start()
        self._assert_acked_present()
        self.assertPutOk(self.node, "after", "restart")


if __name__ == "__main__":
    unittest.main()
