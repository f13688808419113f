"""tests/http/front_tls_test.py: TLS for the HTTP and RESP front ends
(--http-tls, --resp-tls) with the real clients: curl pins the device's
front-end certificate (DIR/front-end-cert.pem) with --cacert, redis-cli
with --tls --cacert, each authenticated by a token; a client without the
certificate is refused by its own verification, a plaintext client on a
TLS port is closed and the server keeps serving; a non-loopback address
is refused without TLS, and without tokens (the insecure flags) always."""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peerkv_server import Server, cli, tmpdir  # noqa: E402


def run(cmd, timeout=20):
    p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


class FrontEndTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(extra=["--http-tls", "--resp-listen", "127.0.0.1:0", "--resp-tls"])
        cls.cert = os.path.join(cls.server.data, "front-end-cert.pem")
        _, out, _ = cli("--data", cls.server.data, "token", "create", "tls-test")
        cls.token = out.strip()
        line = cls.server.wait_for_log("RESP clients:", 10)
        cls.resp_host, cls.resp_port = re.search(r"RESP clients: (\S+):(\d+) ", line).groups()
        cls.server.wait_for_log(cls.cert, 1)

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        assert rc == 0, f"the server exited {rc}"

    def curl(self, url, *extra):
        return run(["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}",
                    "-H", "Authorization: Bearer " + self.token, *extra, url])

    def redis_cli(self, *args, tls=True, cacert=True):
        cmd = ["redis-cli", "-h", self.resp_host, "-p", self.resp_port, "--no-auth-warning"]
        if tls:
            cmd.append("--tls")
            if cacert:
                cmd += ["--cacert", self.cert]
        return run(cmd + list(args))

    def test_the_log_and_url_say_https(self):
        self.assertTrue(self.server.base.startswith("https://"), self.server.base)
        with open(self.cert) as f:
            self.assertIn("BEGIN CERTIFICATE", f.read())

    def test_curl_pins_the_certificate(self):
        port = self.server.http.rsplit(":", 1)[1]
        for host in ("127.0.0.1", "localhost"):
            rc, out, err = self.curl(f"https://{host}:{port}/v1/status", "--cacert", self.cert)
            self.assertEqual(rc, 0, err)
            body, _, code = out.rpartition(b"\n")
            self.assertEqual(code, b"200", body)
            self.assertIn(b'"replica"', body)
        rc, out, err = self.curl(f"https://127.0.0.1:{port}/v1/kv/tls/a", "--cacert", self.cert,
                                 "-X", "PUT", "--data-binary", "over tls")
        self.assertEqual((rc, out.rpartition(b"\n")[2]), (0, b"200"), err)
        rc, out, _ = self.curl(f"https://127.0.0.1:{port}/v1/kv/tls/a", "--cacert", self.cert)
        self.assertEqual(out, b"over tls\n200")
        # Authentication is still asked over TLS.
        rc, out, _ = run(["curl", "-sS", "--cacert", self.cert, "-o", "-", "-w", "\n%{http_code}",
                          f"https://127.0.0.1:{port}/v1/status"])
        self.assertEqual(out.rpartition(b"\n")[2], b"401")
        # Without the pinned certificate curl refuses the server (60: the
        # certificate cannot be verified).
        rc, _, err = self.curl(f"https://127.0.0.1:{port}/v1/status")
        self.assertEqual(rc, 60, err)

    def test_plaintext_http_is_refused(self):
        port = self.server.http.rsplit(":", 1)[1]
        rc, out, err = self.curl(f"http://127.0.0.1:{port}/v1/status")
        self.assertNotEqual(rc, 0, out)
        self.assertIn(rc, (52, 56), err)  # empty reply / connection reset
        rc, out, err = self.curl(f"https://127.0.0.1:{port}/v1/status", "--cacert", self.cert)
        self.assertEqual((rc, out.rpartition(b"\n")[2]), (0, b"200"), err)

    def test_redis_cli_over_tls(self):
        rc, out, err = self.redis_cli("-a", self.token, "SET", "k", "over tls")
        self.assertEqual((rc, out.strip()), (0, b"OK"), err)
        rc, out, err = self.redis_cli("-a", self.token, "GET", "k")
        self.assertEqual((rc, out.strip()), (0, b"over tls"), err)
        # AUTH is still required over TLS.
        rc, out, err = self.redis_cli("GET", "k")
        self.assertIn(b"NOAUTH", out + err)
        # Without the pinned certificate redis-cli refuses the server.
        rc, out, err = self.redis_cli("-a", self.token, "PING", cacert=False)
        self.assertNotEqual(out.strip(), b"PONG")
        self.assertIn(b"certificate verify failed", out + err)

    def test_plaintext_resp_is_refused(self):
        rc, out, err = self.redis_cli("-a", self.token, "PING", tls=False)
        self.assertNotEqual(out.strip(), b"PONG", err)
        # The server closes it: redis-cli sees the close or the reset.
        self.assertRegex(out + err, b"Server closed the connection|Connection reset by peer")
        self.server.wait_for_log("TLS: ", 10)
        rc, out, err = self.redis_cli("-a", self.token, "PING")
        self.assertEqual((rc, out.strip()), (0, b"PONG"), err)


class FrontEndTlsFlagsTest(unittest.TestCase):
    def serve(self, *flags):
        data = os.path.join(tmpdir("flags"), "data")
        return cli("serve", "--data", data, "--listen", "127.0.0.1:0", *flags, check=False)

    def test_non_loopback_needs_tls(self):
        rc, _, err = self.serve("--http-listen", "0.0.0.0:0")
        self.assertEqual(rc, 2, err)
        self.assertIn("not a loopback address", err)
        self.assertIn("--http-tls", err)
        rc, _, err = self.serve("--resp-listen", "0.0.0.0:0")
        self.assertNotEqual(rc, 0, err)
        self.assertIn("not a loopback address", err)
        self.assertIn("--resp-tls", err)

    def test_no_tokens_stays_loopback_only(self):
        rc, _, err = self.serve("--http-listen", "0.0.0.0:0", "--http-tls",
                                "--http-insecure-loopback")
        self.assertEqual(rc, 2, err)
        self.assertIn("--http-insecure-loopback", err)
        rc, _, err = self.serve("--resp-listen", "0.0.0.0:0", "--resp-tls",
                                "--resp-insecure-loopback")
        self.assertNotEqual(rc, 0, err)
        self.assertIn("--resp-insecure-loopback", err)

    def test_tls_flags_need_their_listen(self):
        rc, _, err = self.serve("--http-tls")
        self.assertEqual(rc, 2, err)
        self.assertIn("need --http-listen", err)
        rc, _, err = self.serve("--resp-tls")
        self.assertEqual(rc, 2, err)
        self.assertIn("--resp-tls need --resp-listen", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
