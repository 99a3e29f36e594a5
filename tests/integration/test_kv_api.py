"""Key-value API of one node, row by row (API.md §2) and /cluster/info of a
lone node (API.md §3). Each test starts its own node in a fresh directory."""

import json
import unittest

from kvdtest import JSON, TEXT, KvdTestCase

UTF8_SAMPLES = [
    "hello world",
    "tab\there",
    "line1\nline2\r\nline3\n",
    "emoji \U0001F600\U0001F680 ok",
    "  leading and trailing spaces  ",
    "\u00e9t\u00e9 \u4e2d\u6587 \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "x",
    "noncharacters \uffff and the last code point \U0010ffff",
    "\ufeffBOM first",
]


class KvApiTest(KvdTestCase):
    def setUp(self):
        super().setUp()
        self.node = self.start_node()

    # ---- success rows
    def test_put_then_get_returns_value(self):
        n = self.node
        self.assertText(n.put("greeting", "hello"), 200, b"")
        self.assertText(n.get("greeting"), 200, b"hello")

    def test_put_overwrites_value(self):
        n = self.node
        self.assertPutOk(n, "k", "one")
        self.assertPutOk(n, "k", "two")
        self.assertValue(n, "k", "two")

    def test_delete_existing_key_then_get_404(self):
        n = self.node
        self.assertPutOk(n, "gone", "v")
        self.assertText(n.delete("gone"), 200, b"")
        self.assertText(n.get("gone"), 404, "key not found\n")

    def test_delete_absent_key_is_200(self):
        self.assertText(self.node.delete("never-written"), 200, b"")

    def test_get_absent_key_is_404_key_not_found(self):
        self.assertText(self.node.get("absent"), 404, "key not found\n")

    def test_health_is_200_ok(self):
        self.assertText(self.node.request("GET", "/health"), 200, "ok\n")

    def test_clear_removes_every_key(self):
        n = self.node
        keys = ["c%d" % i for i in range(20)]
        for k in keys:
            self.assertPutOk(n, k, "v-" + k)
        self.assertText(n.request("DELETE", "/clear"), 200, b"")
        for k in keys:
            self.assertText(n.get(k), 404, "key not found\n")
        # The store still works after a clear.
        self.assertPutOk(n, "c0", "again")
        self.assertValue(n, "c0", "again")

    # ---- empty key
    def test_put_empty_key_is_400(self):
        self.assertText(self.node.request("PUT", "/kv/", "v"), 400, "key cannot be empty\n")

    def test_get_empty_key_is_400(self):
        self.assertText(self.node.request("GET", "/kv/"), 400, "key cannot be empty\n")

    def test_delete_empty_key_is_400(self):
        self.assertText(self.node.request("DELETE", "/kv/"), 400, "key cannot be empty\n")

    # ---- invalid keys
    def test_invalid_key_characters_are_400(self):
        n = self.node
        for raw in ["a!b", "a*b", "a~b", "a,b", "a$b", "a@b", "a/b", "a'b", "a(b)", "a+b", "a=b"]:
            for method, body in (("PUT", "v"), ("GET", None), ("DELETE", None)):
                with self.subTest(key=raw, method=method):
                    self.assertText(n.request(method, "/kv/" + raw, body), 400, "invalid key\n")

    def test_percent_decoded_invalid_key_is_400(self):
        n = self.node
        # %20 space, %2F slash, %C3%A9 e-acute, %00 NUL, %25 percent, %3F '?', %23 '#'
        for raw in ["a%20b", "a%2Fb", "%C3%A9", "a%00b", "a%25b", "a%3Fb", "a%23b", "%7E"]:
            for method, body in (("PUT", "v"), ("GET", None), ("DELETE", None)):
                with self.subTest(key=raw, method=method):
                    self.assertText(n.request(method, "/kv/" + raw, body), 400, "invalid key\n")

    def test_key_of_1025_bytes_is_400(self):
        n = self.node
        key = "k" * 1025
        self.assertText(n.put(key, "v"), 400, "invalid key\n")
        self.assertText(n.get(key), 400, "invalid key\n")
        self.assertText(n.delete(key), 400, "invalid key\n")

    def test_key_of_1024_bytes_is_accepted(self):
        n = self.node
        key = ("Az09:_.-" * 128)[:1024]
        self.assertEqual(len(key), 1024)
        self.assertPutOk(n, key, "long-key-value")
        self.assertValue(n, key, "long-key-value")
        self.assertText(n.delete(key), 200, b"")
        self.assertText(n.get(key), 404, "key not found\n")

    def test_key_of_1024_bytes_after_percent_decoding_is_accepted(self):
        n = self.node
        # 1024 decoded bytes written as 3072 encoded characters
        self.assertPutOk(n, "%41" * 1024, "enc")
        self.assertValue(n, "A" * 1024, "enc")
        self.assertText(n.put("%41" * 1025, "enc"), 400, "invalid key\n")

    def test_all_allowed_key_characters_accepted(self):
        n = self.node
        key = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:_.-"
        self.assertPutOk(n, key, "all")
        self.assertValue(n, key, "all")
        for k in ["a", "-", ".", "..", ":", "_"]:
            with self.subTest(key=k):
                self.assertPutOk(n, k, "v" + k)
                self.assertValue(n, k, "v" + k)

    def test_percent_encoded_key_is_decoded(self):
        n = self.node
        self.assertPutOk(n, "%41b%3Ac%2d%5F", "decoded")  # "Ab:c-_"
        self.assertValue(n, "Ab:c-_", "decoded")
        self.assertText(n.get("%41%62%3a%63%2D%5f"), 200, b"decoded")
        self.assertText(n.delete("Ab%3Ac-_"), 200, b"")
        self.assertText(n.get("Ab:c-_"), 404, "key not found\n")

    def test_query_string_is_not_part_of_key(self):
        n = self.node
        self.assertPutOk(n, "q?x=1&y=2", "queried")
        self.assertValue(n, "q", "queried")
        self.assertText(n.get("q?other=3"), 200, b"queried")
        self.assertText(n.get("q?"), 200, b"queried")
        self.assertText(n.request("DELETE", "/kv/q?z=9"), 200, b"")
        self.assertText(n.get("q"), 404, "key not found\n")

    # ---- values
    def test_empty_value_is_400(self):
        n = self.node
        self.assertText(n.put("k", b""), 400, "value cannot be empty\n")
        self.assertText(n.get("k"), 404, "key not found\n")

    def test_invalid_utf8_value_is_400(self):
        n = self.node
        bad = [b"\xff", b"abc\xfe", b"\xc3\x28", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80",
               b"\xf8\x88\x80\x80\x80", b"ok\x80", b"\xf4\x90\x80\x80"]
        for v in bad:
            with self.subTest(value=v):
                self.assertText(n.put("u", v), 400, "value must be UTF-8 text\n")
        self.assertText(n.get("u"), 404, "key not found\n")

    def test_values_stored_byte_for_byte(self):
        n = self.node
        for i, v in enumerate(UTF8_SAMPLES):
            with self.subTest(value=v):
                self.assertPutOk(n, "b%d" % i, v)
                self.assertValue(n, "b%d" % i, v)

    def test_value_of_default_limit_accepted_and_one_more_is_413(self):
        n = self.node
        big = b"a" * 1048576
        self.assertPutOk(n, "big", big)
        r = n.get("big")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, big)
        self.assertText(n.put("big2", b"b" * 1048577), 413, "value too large\n")
        self.assertText(n.get("big2"), 404, "key not found\n")

    def test_multibyte_value_at_limit_counted_in_bytes(self):
        n = self.node
        v = "\u00e9" * (1048576 // 2)  # 2 bytes each: exactly the limit
        self.assertPutOk(n, "mb", v)
        self.assertValue(n, "mb", v)
        self.assertText(n.put("mb2", v + "x"), 413, "value too large\n")

    def test_stale_read_is_served(self):
        n = self.node
        self.assertPutOk(n, "s", "stale-ok")
        self.assertText(n.get("s", "?consistency=stale"), 200, b"stale-ok")
        self.assertText(n.get("nope", "?consistency=stale"), 404, "key not found\n")

    def test_write_visible_to_next_request_on_other_connection(self):
        n = self.node
        with n.conn() as a, n.conn() as b:
            for i in range(100):
                self.assertText(a.request("PUT", "/kv/ryw", "v%d" % i), 200, b"")
                self.assertText(b.request("GET", "/kv/ryw"), 200, b"v%d" % i)
            self.assertText(a.request("DELETE", "/kv/ryw"), 200, b"")
            self.assertText(b.request("GET", "/kv/ryw"), 404, "key not found\n")

    def test_values_shared_by_keys_are_independent(self):
        n = self.node
        self.assertPutOk(n, "a", "same")
        self.assertPutOk(n, "b", "same")
        self.assertText(n.get("A"), 404, "key not found\n")  # keys are case-sensitive
        self.assertText(n.delete("a"), 200, b"")
        self.assertValue(n, "b", "same")

    # ---- methods and paths
    def _assert_405(self, method, path, must_allow):
        r = self.node.request(method, path, "x" if method in ("POST", "PATCH") else None)
        self.assertText(r, 405, "method not allowed\n")
        allow = r.header("Allow")
        self.assertIsNotNone(allow, r)
        allowed = {m.strip().upper() for m in allow.split(",")}
        for m in must_allow:
            self.assertIn(m, allowed, r)
        self.assertNotIn(method, allowed, r)

    def test_405_with_allow_on_kv(self):
        for m in ("POST", "PATCH"):
            with self.subTest(method=m):
                self._assert_405(m, "/kv/x", ["GET", "PUT", "DELETE"])

    def test_405_with_allow_on_clear(self):
        for m in ("GET", "PUT", "POST"):
            with self.subTest(method=m):
                self._assert_405(m, "/clear", ["DELETE"])

    def test_405_with_allow_on_health(self):
        for m in ("PUT", "POST", "DELETE"):
            with self.subTest(method=m):
                self._assert_405(m, "/health", ["GET"])

    def test_unknown_path_is_404_not_found(self):
        for path in ("/nope", "/kvx/a", "/", "/healthz", "/clear/x"):
            with self.subTest(path=path):
                self.assertText(self.node.request("GET", path), 404, "not found\n")


class LoneNodeInfoTest(KvdTestCase):
    """GET /cluster/info of a one-member cluster (API.md §3)."""

    def _info(self, node):
        r = node.request("GET", "/cluster/info")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.content_type, JSON, r)
        info = json.loads(r.body.decode("utf-8"))
        for field in ("id", "role", "term", "leader", "voted-for", "peers", "learners",
                      "commit-index", "last-applied"):
            self.assertIn(field, info, info)
        self.assertEqual(info["role"], "leader", info)
        self.assertEqual(info["learners"], [], info)
        self.assertIsInstance(info["term"], int)
        self.assertGreaterEqual(info["term"], 1)
        self.assertIsInstance(info["commit-index"], int)
        self.assertIsInstance(info["last-applied"], int)
        return info

    def test_info_default_id_is_colon_port(self):
        n = self.start_node()
        info = self._info(n)
        me = ":%d" % n.port
        self.assertEqual(info["id"], me)
        self.assertEqual(info["leader"], me)
        self.assertEqual(info["peers"], [me])

    def test_info_addr_flag_id_exactly_as_configured(self):
        n = self.new_node()
        me = "127.0.0.1:%d" % n.port
        n.args = ["--addr", me]
        n.start()
        info = self._info(n)
        self.assertEqual(info["id"], me)
        self.assertEqual(info["leader"], me)
        self.assertEqual(info["peers"], [me])

    def test_info_peers_flag_self_only(self):
        n = self.new_node()
        me = ":%d" % n.port
        n.args = ["--peers", me]
        n.start()
        info = self._info(n)
        self.assertEqual(info["id"], me)
        self.assertEqual(info["leader"], me)
        self.assertEqual(info["peers"], [me])

    def test_info_addr_env_reports_empty_peers(self):
        n = self.new_node()
        me = "127.0.0.1:%d" % n.port
        n.env = {"ADDR": me}
        n.start()
        info = self._info(n)
        self.assertEqual(info["id"], me)
        self.assertEqual(info["leader"], me)
        self.assertEqual(info["peers"], [])

    def test_info_commit_and_applied_follow_writes(self):
        n = self.start_node()
        before = self._info(n)
        self.assertPutOk(n, "a", "1")
        after = self._info(n)
        self.assertGreater(after["commit-index"], before["commit-index"])
        self.assertGreaterEqual(after["last-applied"], before["last-applied"] + 1)
        self.assertEqual(after["last-applied"], after["commit-index"])


if __name__ == "__main__":
    unittest.main()
