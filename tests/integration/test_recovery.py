"""Crash between append and apply (API.md §6, ARCHITECTURE.md "LevelDB is
the state machine"): the Raft log is the write-ahead log, so a state machine
that lost its latest applies (LevelDB's own writes are not synced) is brought
back by replaying only the log entries after its applied index.

The loss is made real by putting back an older copy of the LevelDB directory
after a SIGKILL: the log on disk holds entries the state machine never saw."""

import os
import re
import shutil
import unittest

from kvdtest import KvdTestCase


class RecoveryTest(KvdTestCase):
    def test_state_machine_behind_log_is_replayed_from_applied_index(self):
        n = self.start_node(args=["--snapshot-threshold", "100000"])
        for i in range(30):
            self.assertPutOk(n, "a%d" % i, "first %d" % i)
        self.assertEqual(n.stop(), 0)
        kv = os.path.join(n.data_dir, "kv")
        old = os.path.join(self.tmp, "kv-old")
        shutil.copytree(kv, old)

        n.start()
        for i in range(30, 60):
            self.assertPutOk(n, "a%d" % i, "second %d" % i)
        for i in range(0, 10):
            self.assertEqual(n.delete("a%d" % i).status, 200)
        self.assertPutOk(n, "a10", "overwritten")
        n.kill()

        # The state machine loses everything applied after the copy.
        shutil.rmtree(kv)
        shutil.copytree(old, kv)
        n.start()
        for i in range(0, 10):
            self.assertText(n.get("a%d" % i), 404, "key not found\n")
        self.assertValue(n, "a10", "overwritten")
        for i in range(11, 30):
            self.assertValue(n, "a%d" % i, "first %d" % i)
        for i in range(30, 60):
            self.assertValue(n, "a%d" % i, "second %d" % i)
        # Only the entries after the old applied index were replayed.
        recovered = re.findall(r"msg=recovered .*applied_index=(\d+) replay=(\d+)",
                               n.stderr_text())
        applied, replay = map(int, recovered[-1])
        self.assertGreater(applied, 30)
        self.assertGreaterEqual(replay, 41)  # 30 puts, 10 deletes, 1 overwrite
        self.assertLess(replay, 60)  # not the whole history


if __name__ == "__main__":
    unittest.main()
