"""tests/http/front_access_test.py: the HTTP and RESP front ends check the
local user against the keyspace's policy as RPC does (issue 10, "every
path"). Two real servers: Jane's laptop, whose `jane.blog` is readable by
her group `blog-readers`, and Josephine's phone, a member, which pulls
the blog from Jane's laptop. On Josephine's phone, reads of the blog
through HTTP (GET, scan, watch) and RESP (GET, SCAN, INFO keyspace) are
answered; every write (HTTP PUT, DELETE, batch; RESP SET, MSET, DEL) is
refused as `peerkv put` over RPC refuses it: HTTP 403 with a JSON error,
RESP -NOPERM, both naming the keyspace and the missing right; the blog
stays as Jane wrote it on both replicas."""

import json
import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peerkv_server import Server, cli, identity, tmpdir  # noqa: E402

BLOG = "jane.blog"


def curl_json(method, url, data=None):
    import subprocess
    cmd = ["curl", "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    cmd.append(url)
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError(f"curl {method} {url}: {p.stderr.decode()}")
    body, _, code = p.stdout.rpartition(b"\n")
    return int(code), body


class Resp:
    """One RESP connection (RESP2): sends commands, reads one reply each."""

    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("the RESP server closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-", b":"):
            return line
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            value, self.buf = self.buf[:n], self.buf[n + 2:]
            return value
        if kind in (b"*", b"="):
            if kind == b"=":  # verbatim: like a bulk string
                n = int(rest)
                while len(self.buf) < n + 2:
                    self.buf += self.sock.recv(65536)
                value, self.buf = self.buf[4:n], self.buf[n + 2:]
                return value
            return [self._reply() for _ in range(int(rest))]
        raise AssertionError(f"unexpected RESP reply {line!r}")

    def command(self, *args):
        args = [a if isinstance(a, bytes) else a.encode() for a in args]
        self.sock.sendall(b"*%d\r\n" % len(args) +
                          b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        return self._reply()

    def close(self):
        self.sock.close()


class FrontEndAccessTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.jane_data = os.path.join(tmpdir("jane"), "data")
        cls.jos_data = os.path.join(tmpdir("josephine"), "data")
        cli("--data", cls.jane_data, "init", "--user", "jane", "--name", "laptop")
        cli("--data", cls.jos_data, "init", "--user", "josephine", "--name", "phone")
        _, cls.jane_user = identity(cls.jane_data)
        _, cls.jos_user = identity(cls.jos_data)
        cli("--data", cls.jane_data, "friend", "add", cls.jos_user, "--name", "josephine")
        cli("--data", cls.jos_data, "friend", "add", cls.jane_user, "--name", "jane")
        cls.jane = Server(data=cls.jane_data, extra=[
            "--http-insecure-loopback", "--replica-name", "jane-laptop",
            "--gossip-interval-ms", "100"])
        cls.jos = None
        try:
            cli("--data", cls.jane_data, "group", "create", "blog-readers")
            cli("--data", cls.jane_data, "group", "add", "blog-readers", cls.jos_user)
            cli("--data", cls.jane_data, "policy", "set", BLOG, "--read", "blog-readers")
            cli("--data", cls.jane_data, "put", BLOG, "post-1", "Hello from Jane")
            cls.jos = Server(data=cls.jos_data, extra=[
                "--http-insecure-loopback", "--resp-listen", "127.0.0.1:0",
                "--resp-insecure-loopback", "--replica-name", "josephine-phone",
                "--gossip-interval-ms", "100", "--peer", cls.jane.rpc])
            line = cls.jos.wait_for_log("RESP clients:", 10)
            cls.resp = re.search(r"RESP clients: (\S+) ", line).group(1)
            # Bounded wait for the post to reach Josephine's phone.
            deadline = time.monotonic() + 30
            while True:
                code, body = curl_json("GET", cls.jos.base + f"/v1/kv/{BLOG}/post-1")
                if code == 200:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"the post never reached Josephine's phone: {code} "
                                         f"{body!r}\n" + "\n".join(cls.jos.log))
                time.sleep(0.05)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.jos is not None:
            cls.jos.stop()
        cls.jane.stop()

    def assert_refused_write(self, code, body):
        self.assertEqual(code, 403, body)
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], "PERMISSION_DENIED")
        self.assertIn(f"user {self.jos_user} may not write keyspace '{BLOG}'", err["message"])

    def assert_blog_unchanged(self):
        for server in (self.jos, self.jane):
            code, body = curl_json("GET", server.base + f"/v1/kv/{BLOG}/post-1")
            self.assertEqual((code, body), (200, b"Hello from Jane"), server.data)
            code, body = curl_json("GET", server.base + f"/v1/kv/{BLOG}/forged")
            self.assertEqual(code, 404, body)

    def test_rpc_refuses_the_write(self):
        # The reference: the RPC client API's answer on the same replica.
        rc, _, err = cli("--data", self.jos_data, "put", BLOG, "post-1", "forged", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn(f"may not write keyspace '{BLOG}'", err)

    def test_http_reads_the_blog_and_cannot_write_it(self):
        base = self.jos.base
        code, body = curl_json("GET", base + f"/v1/kv/{BLOG}/post-1")
        self.assertEqual((code, body), (200, b"Hello from Jane"))
        code, body = curl_json("GET", base + f"/v1/kv/{BLOG}")
        self.assertEqual(code, 200, body)
        self.assertEqual([r["key"] for r in json.loads(body)["records"]], ["post-1"])
        code, body = curl_json("PUT", base + f"/v1/kv/{BLOG}/post-1", data=b"forged")
        self.assert_refused_write(code, body)
        code, body = curl_json("PUT", base + f"/v1/kv/{BLOG}/forged", data=b"forged")
        self.assert_refused_write(code, body)
        code, body = curl_json("DELETE", base + f"/v1/kv/{BLOG}/post-1")
        self.assert_refused_write(code, body)
        writes = [{"keyspace": "mine", "key": "a", "value": "1"},
                  {"keyspace": BLOG, "key": "forged", "value": "x"}]
        code, body = curl_json("POST", base + "/v1/batch",
                               data=json.dumps({"writes": writes}).encode())
        self.assert_refused_write(code, body)
        # The batch was refused whole: its allowed write did not happen.
        code, _ = curl_json("GET", base + "/v1/kv/mine/a")
        self.assertEqual(code, 404)
        # Josephine's own keyspaces are hers to write.
        code, body = curl_json("PUT", base + "/v1/kv/josephine.notes/a", data=b"mine")
        self.assertEqual(code, 200, body)
        self.assert_blog_unchanged()

    def test_resp_reads_the_blog_and_cannot_write_it(self):
        r = Resp(self.resp)
        try:
            self.assertEqual(r.command("SELECT", "ks:" + BLOG), b"+OK")
            self.assertEqual(r.command("GET", "post-1"), b"Hello from Jane")
            self.assertEqual(r.command("SCAN", "0"), [b"0", [b"post-1"]])
            self.assertEqual(r.command("DBSIZE"), b":1")
            for write in (["SET", "post-1", "forged"], ["SET", "forged", "x"],
                          ["MSET", "forged", "x", "post-1", "y"], ["DEL", "post-1"]):
                reply = r.command(*write)
                self.assertTrue(reply.startswith(b"-NOPERM "), (write, reply))
                self.assertIn(f"user {self.jos_user} may not write keyspace '{BLOG}'".encode(),
                              reply)
            self.assertEqual(r.command("GET", "post-1"), b"Hello from Jane")
            info = r.command("INFO", "keyspace")
            self.assertIn(f"ks:{BLOG}:".encode(), info)
            self.assertEqual(r.command("SELECT", "ks:josephine.notes"), b"+OK")
            self.assertEqual(r.command("SET", "b", "mine"), b"+OK")
        finally:
            r.close()
        self.assert_blog_unchanged()


if __name__ == "__main__":
    unittest.main(verbosity=2)
