"""tests/http/http_process_test.py: the HTTP front end of a real server,
driven with curl (Debian curl) and raw sockets: tokens, the key-value API
with bytes that are not UTF-8, scan paging, batches, SSE watches with
resume, CORS, /metrics through a Prometheus text-format parser
(python3-prometheus-client), and bad input: bad methods, oversized
headers, bad percent-encoding, bodies over the limit, slow readers,
idle connections past the limit, 5,000 idle connections on each of the
HTTP and RESP ports, and a bounded fuzz of raw requests; after each,
other clients are still served. Two paired servers show per-peer
metrics, bytes in and out included."""

import base64
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peerkv_server import Server, cli, pair, tmpdir  # noqa: E402

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def curl(method, url, data=None, token=None, headers=(), timeout=20):
    """Returns (HTTP code, body bytes, response headers dict)."""
    cmd = ["curl", "-sS", "-X", method, "-D", "-", "-o", "-", "--max-time", str(timeout)]
    if token:
        cmd += ["-H", "Authorization: Bearer " + token]
    for h in headers:
        cmd += ["-H", h]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    cmd.append(url)
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout + 10)
    if p.returncode != 0:
        raise AssertionError(f"curl {method} {url}: {p.stderr.decode()}")
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    code = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return code, body, hdrs


def raw(address, data, read=True, timeout=10):
    """Sends raw bytes; returns what the server answered until it closed
    (or the timeout)."""
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except (BrokenPipeError, ConnectionResetError, OSError):
        pass
    out = b""
    if read:
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    s.close()
    return out


class SseReader:
    """A server-sent-event stream over a raw socket."""

    def __init__(self, address, path, token, last_event_id=None):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        req = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        if last_event_id is not None:
            req += f"Last-Event-ID: {last_event_id}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1])
        self.text = ""

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError("the stream ended")
        return chunk

    def _dechunk(self):
        # Chunked transfer coding: "<hex>\r\n<data>\r\n".
        while True:
            line, sep, rest = self.buf.partition(b"\r\n")
            if not sep:
                return
            size = int(line, 16)
            if len(rest) < size + 2:
                return
            self.text += rest[:size].decode()
            self.buf = rest[size + 2:]

    def next_event(self):
        """The next event with data, as (id, parsed JSON)."""
        while True:
            self._dechunk()
            if "\n\n" in self.text:
                block, _, self.text = self.text.partition("\n\n")
                fields = {}
                for line in block.split("\n"):
                    if line.startswith(":") or not line:
                        continue
                    k, _, v = line.partition(": ")
                    fields[k] = v
                if "data" in fields:
                    return fields.get("id"), json.loads(fields["data"])
                continue
            self.buf += self._recv()

    def close(self):
        self.sock.close()


class HttpApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(extra=["--max-value-bytes", "65536", "--http-write-timeout-ms", "1000",
                                   "--http-idle-timeout-ms", "1500", "--http-max-connections",
                                   "40"])
        _, out, _ = cli("--data", cls.server.data, "token", "create", "test")
        cls.token = out.strip()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def url(self, path):
        return self.server.base + path

    def assert_error(self, code, body, want_code, want_name, want_text=""):
        self.assertEqual(code, want_code, body)
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], want_name)
        self.assertIn(want_text, err["message"])

    def assert_served(self):
        code, body, _ = curl("GET", self.url("/v1/status"), token=self.token)
        self.assertEqual(code, 200, body)

    def test_tokens(self):
        code, body, hdrs = curl("GET", self.url("/v1/kv/ks/a"))
        self.assert_error(code, body, 401, "UNAUTHENTICATED", "Bearer")
        self.assertIn("bearer", hdrs.get("www-authenticate", "").lower())
        code, body, _ = curl("GET", self.url("/v1/kv/ks/a"), token="pkv_wrong")
        self.assert_error(code, body, 401, "UNAUTHENTICATED")
        code, body, _ = curl("GET", self.url("/v1/status"), headers=["Authorization: Basic eA=="])
        self.assert_error(code, body, 401, "UNAUTHENTICATED", "Bearer TOKEN")
        # A token made while the server runs works at once; removed, it stops.
        _, out, _ = cli("--data", self.server.data, "token", "create", "short-lived")
        fresh = out.strip()
        code, _, _ = curl("GET", self.url("/v1/status"), token=fresh)
        self.assertEqual(code, 200)
        _, out, _ = cli("--data", self.server.data, "token", "list")
        self.assertIn("short-lived created ", out)
        self.assertNotIn(fresh, out)
        cli("--data", self.server.data, "token", "remove", "short-lived")
        code, body, _ = curl("GET", self.url("/v1/status"), token=fresh)
        self.assert_error(code, body, 401, "UNAUTHENTICATED")
        rc, _, err = cli("--data", self.server.data, "token", "remove", "short-lived", check=False)
        self.assertEqual(rc, 1)
        self.assertIn("no token named", err)
        rc, _, err = cli("--data", self.server.data, "token", "create", "bad name", check=False)
        self.assertEqual(rc, 2)

    def test_bytes_round_trip(self):
        key = b"\xff\x00k/ey \xe2\x82\xac"
        value = bytes(range(256))
        path = "/v1/kv/bytes/" + urllib.parse.quote(key, safe="")
        code, body, _ = curl("PUT", self.url(path), data=value, token=self.token)
        self.assertEqual(code, 200, body)
        version = json.loads(body)["version"]
        code, body, hdrs = curl("GET", self.url(path), token=self.token)
        self.assertEqual(code, 200)
        self.assertEqual(body, value)
        self.assertEqual(hdrs["content-type"], "application/octet-stream")
        self.assertEqual(hdrs["x-peerkv-version"], version)
        # The CLI sees the same record.
        _, out, _ = cli("--server", self.server.sock, "put", "bytes", "plain", "text")
        code, body, _ = curl("GET", self.url("/v1/kv/bytes"), token=self.token)
        page = json.loads(body)
        by_key = {}
        for r in page["records"]:
            k = r["key"].encode() if "key" in r else base64.b64decode(r["key_b64"])
            v = r["value"].encode() if "value" in r else base64.b64decode(r["value_b64"])
            by_key[k] = v
        self.assertEqual(by_key[key], value)
        self.assertEqual(by_key[b"plain"], b"text")
        self.assertIn("key_b64", page["records"][-1] if "key_b64" in page["records"][-1]
                      else page["records"][0])
        code, body, _ = curl("DELETE", self.url(path), token=self.token)
        self.assertEqual(code, 200, body)
        code, body, _ = curl("GET", self.url(path), token=self.token)
        self.assert_error(code, body, 404, "NOT_FOUND", "no key")

    def test_scan_paging(self):
        writes = [{"keyspace": "paging", "key": f"k{i:03d}", "value": str(i)} for i in range(25)]
        code, body, _ = curl("POST", self.url("/v1/batch"),
                             data=json.dumps({"writes": writes}).encode(), token=self.token)
        self.assertEqual(code, 200, body)
        self.assertEqual(len(json.loads(body)["versions"]), 25)
        seen, after, pages = [], None, 0
        while True:
            q = {"prefix": "k0", "limit": "10"}
            if after is not None:
                q["after"] = after
            code, body, _ = curl("GET", self.url("/v1/kv/paging?" + urllib.parse.urlencode(q)),
                                 token=self.token)
            self.assertEqual(code, 200, body)
            page = json.loads(body)
            pages += 1
            seen += [r["key"] for r in page["records"]]
            if not page["more"]:
                break
            after = page["next_after"]
            self.assertLess(pages, 10)
        self.assertEqual(seen, [f"k{i:03d}" for i in range(25)])
        self.assertEqual(pages, 3)
        code, body, _ = curl("GET", self.url("/v1/kv/paging?limit=0"), token=self.token)
        self.assert_error(code, body, 400, "INVALID_ARGUMENT", "limit must be 1..1000")
        code, body, _ = curl("GET", self.url("/v1/kv/paging?colour=red"), token=self.token)
        self.assert_error(code, body, 400, "INVALID_ARGUMENT", "unknown query parameter 'colour'")

    def test_batch_errors(self):
        code, body, _ = curl("POST", self.url("/v1/batch"), data=b"{not json", token=self.token)
        self.assert_error(code, body, 400, "INVALID_ARGUMENT", "JSON body")
        code, body, _ = curl("POST", self.url("/v1/batch"),
                             data=b'{"writes":[{"keyspace":"b","key":"","value":"x"}]}',
                             token=self.token)
        self.assert_error(code, body, 400, "INVALID_ARGUMENT", "writes[0]")
        code, body, _ = curl("PUT", self.url("/v1/batch"), data=b"{}", token=self.token)
        self.assert_error(code, body, 405, "INVALID_ARGUMENT", "allowed: POST")

    def test_watch_resume(self):
        ks = "watched"
        w = SseReader(self.server.http, f"/v1/watch/{ks}", self.token)
        self.assertEqual(w.status, 200)
        cli("--server", self.server.sock, "put", ks, "a", "1")
        seq_a, rec = w.next_event()
        self.assertEqual((rec["key"], rec["value"]), ("a", "1"))
        curl("PUT", self.url(f"/v1/kv/{ks}/b"), data=b"\xfe", token=self.token)
        seq_b, rec = w.next_event()
        self.assertEqual(base64.b64decode(rec["value_b64"]), b"\xfe")
        self.assertGreater(int(seq_b), int(seq_a))
        w.close()
        cli("--server", self.server.sock, "del", ks, "a")
        # Resumed after the last event seen: only what came after it.
        w = SseReader(self.server.http, f"/v1/watch/{ks}", self.token, last_event_id=seq_b)
        _, rec = w.next_event()
        self.assertEqual(rec["key"], "a")
        self.assertTrue(rec["deleted"])
        w.close()
        code, body, _ = curl("GET", self.url(f"/v1/watch/{ks}?from_seq=x"), token=self.token)
        self.assert_error(code, body, 400, "INVALID_ARGUMENT", "from_seq")

    def test_cors_preflight(self):
        code, _, hdrs = curl("OPTIONS", self.url("/v1/kv/ks/a"),
                             headers=["Origin: http://example.com",
                                      "Access-Control-Request-Method: PUT",
                                      "Access-Control-Request-Headers: authorization"])
        self.assertEqual(code, 204)
        self.assertEqual(hdrs["access-control-allow-origin"], "*")
        self.assertIn("PUT", hdrs["access-control-allow-methods"])
        self.assertIn("Authorization", hdrs["access-control-allow-headers"])
        code, _, hdrs = curl("GET", self.url("/v1/status"), token=self.token,
                             headers=["Origin: http://example.com"])
        self.assertEqual(hdrs["access-control-allow-origin"], "*")

    def test_status_and_page(self):
        code, body, _ = curl("GET", self.url("/v1/status"), token=self.token)
        status = json.loads(body)
        self.assertIn("replica_id", status["replica"])
        self.assertEqual(status["peers"], [])
        code, body, hdrs = curl("GET", self.url("/"))
        self.assertEqual(code, 200)
        self.assertIn("text/html", hdrs["content-type"])
        self.assertIn(b"EventSource", body)

    def test_metrics_parse(self):
        curl("PUT", self.url("/v1/kv/m/k"), data=b"v", token=self.token)
        curl("GET", self.url("/v1/kv/m/k"), token=self.token)
        curl("GET", self.url("/v1/kv/m/missing"), token=self.token)
        # RPC calls (the CLI over the Unix socket) are counted by method and code.
        cli("--server", self.server.sock, "put", "m", "r", "1")
        rc, _, _ = cli("--server", self.server.sock, "put", "m", "r", "x" * 10, "--if-absent",
                       check=False)
        self.assertNotEqual(rc, 0)
        code, body, hdrs = curl("GET", self.url("/metrics"), token=self.token)
        self.assertEqual(code, 200)
        self.assertIn("text/plain", hdrs["content-type"])
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        for name, kind in [("peerkv_requests", "counter"),
                           ("peerkv_request_duration_seconds", "histogram"),
                           ("peerkv_commit_group_requests", "histogram"),
                           ("peerkv_commit_duration_seconds", "histogram"),
                           ("peerkv_records", "gauge"), ("peerkv_tombstones", "gauge"),
                           ("peerkv_disk_bytes", "gauge"), ("peerkv_map_bytes", "gauge"),
                           ("peerkv_peer_reachable", "gauge")]:
            self.assertIn(name, families)
            self.assertEqual(families[name].type, kind, name)
        got = {(s.labels.get("frontend"), s.labels.get("op"), s.labels.get("code")): s.value
               for s in families["peerkv_requests"].samples}
        self.assertGreaterEqual(got[("http", "get", "404")], 1)
        self.assertGreaterEqual(got[("http", "put", "200")], 1)
        self.assertGreaterEqual(got[("rpc", "put", "OK")], 1)
        self.assertGreaterEqual(got[("rpc", "writeIf", "FAILED_PRECONDITION")], 1, got)
        timed = {(s.labels.get("frontend"), s.labels.get("op")) for s in
                 families["peerkv_request_duration_seconds"].samples if s.name.endswith("_count")}
        self.assertIn(("rpc", "put"), timed)
        commits = [s for s in families["peerkv_commit_duration_seconds"].samples
                   if s.name.endswith("_count")]
        self.assertGreaterEqual(commits[0].value, 1)

    # Bad input. Each case ends with another client being served.

    def test_bad_method(self):
        out = raw(self.server.http, b"FROB / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertRegex(out, rb"^HTTP/1.1 (400|501) ")
        code, body, hdrs = curl("PATCH", self.url("/v1/kv/ks/a"), token=self.token)
        self.assert_error(code, body, 405, "INVALID_ARGUMENT", "method PATCH")
        self.assertEqual(hdrs["allow"], "GET, PUT, DELETE")
        out = raw(self.server.http, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        self.assertRegex(out, rb"^HTTP/1.1 (400|501) ")
        self.assert_served()

    def test_oversized_headers(self):
        big = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n"
        out = raw(self.server.http, big)
        # A 4xx, or the connection closed without one; raw() returned, so
        # it was closed either way.
        if out:
            self.assertRegex(out, rb"^HTTP/1.1 4\d\d ")
        self.assert_served()

    def test_bad_percent_encoding(self):
        code, body, _ = curl("GET", self.url("/v1/kv/ks/a%zzb"), token=self.token)
        self.assert_error(code, body, 400, "INVALID_ARGUMENT", "bad percent-encoding")
        code, body, _ = curl("GET", self.url("/v1/kv/k%2/a"), token=self.token)
        self.assert_error(code, body, 400, "INVALID_ARGUMENT", "keyspace")
        self.assert_served()

    def test_body_over_limit(self):
        code, body, _ = curl("PUT", self.url("/v1/kv/ks/big"), data=b"x" * 70_000,
                             token=self.token)
        self.assert_error(code, body, 413, "INVALID_ARGUMENT", "limit is 65536")
        # Chunked (no Content-Length): refused when the limit is crossed.
        code, body, _ = curl("PUT", self.url("/v1/kv/ks/big"), data=b"x" * 70_000,
                             token=self.token, headers=["Transfer-Encoding: chunked"])
        self.assert_error(code, body, 413, "INVALID_ARGUMENT", "over the limit")
        self.assert_served()

    def test_slow_reader_is_closed_others_served(self):
        value = b"v" * 60_000
        curl("PUT", self.url("/v1/kv/slow/k"), data=value, token=self.token)
        host, port = self.server.http.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Many pipelined GETs of a 60 KB value, never read: the server's
        # writes block, and it closes the connection after the write timeout.
        req = (f"GET /v1/kv/slow/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.token}"
               "\r\n\r\n").encode()
        s.sendall(req * 200)
        t0 = time.monotonic()
        self.assert_served()
        self.assertLess(time.monotonic() - t0, 5)
        # Now drain: the server must have closed it (EOF or reset) within
        # the write timeout (1 s) plus slack.
        s.settimeout(15)
        total, closed = 0, False
        deadline = time.monotonic() + 15
        time.sleep(2)  # let the 1 s write timeout pass without reading
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(1 << 20)
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            total += len(chunk)
        s.close()
        self.assertTrue(closed)
        self.assertLess(total, 200 * len(value))
        self.assert_served()

    def test_watcher_that_never_reads_is_closed(self):
        host, port = self.server.http.rsplit(":", 1)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        s.connect((host, int(port)))
        s.sendall((f"GET /v1/watch/flood HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {self.token}\r\n\r\n").encode())
        value = "w" * 60_000
        # 12 MB of events: more than the kernel's socket buffers (4 MB each
        # way at most), so the server's writes block.
        for i in range(24):
            writes = [{"keyspace": "flood", "key": f"k{i}-{j}", "value": value} for j in range(8)]
            code, body, _ = curl("POST", self.url("/v1/batch"),
                                 data=json.dumps({"writes": writes}).encode(), token=self.token)
            self.assertEqual(code, 200, body)
        t0 = time.monotonic()
        self.assert_served()
        self.assertLess(time.monotonic() - t0, 5)
        time.sleep(2)  # past the 1 s write timeout without reading
        s.settimeout(15)
        total, closed = 0, False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(1 << 20)
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            total += len(chunk)
        s.close()
        self.assertTrue(closed)
        self.assertLess(total, 24 * 8 * 60_000)  # it did not get everything
        self.assert_served()

    def test_idle_connections_past_the_limit(self):
        fds_before = self.server.open_fds()
        socks = []
        host, port = self.server.http.rsplit(":", 1)
        refused = 0
        for _ in range(60):
            socks.append(socket.create_connection((host, int(port))))
        # Past the limit (40), connections are answered 503 and closed.
        for s in socks:
            s.settimeout(0.2)
            try:
                data = s.recv(4096)
                if data.startswith(b"HTTP/1.1 503"):
                    refused += 1
            except socket.timeout:
                pass
        self.assertGreaterEqual(refused, 15)
        # The others are closed by the idle timeout (1.5 s), bounded wait.
        for s in socks:
            s.settimeout(10)
            try:
                while s.recv(4096):
                    pass
            except (socket.timeout, ConnectionResetError):
                self.fail("an idle connection was not closed within 10 s")
            s.close()
        self.assert_served()
        # File descriptors return to their level (bounded wait).
        deadline = time.monotonic() + 10
        while self.server.open_fds() > fds_before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertLessEqual(self.server.open_fds(), fds_before + 2)

    def test_fuzz_requests(self):
        rng = random.Random(7)
        seeds = [
            b"GET /v1/kv/ks/a%2Fb?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\n\r\n",
            b"PUT /v1/kv/ks/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\n"
            b"Content-Length: 3\r\n\r\nabc",
            b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2f\r\n"
            b'{"writes":[{"keyspace":"f","key":"a","value":"1"}]}\r\n0\r\n\r\n',
            b"GET /v1/watch/ks?from_seq=0 HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\n\r\n",
        ]
        seeds = [s.replace(b"TOKEN", self.token.encode()) for s in seeds]
        for i in range(300):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 6)):
                pos = rng.randrange(len(data))
                op = rng.randrange(3)
                if op == 0:
                    del data[pos:pos + rng.randint(1, 5)]
                elif op == 1:
                    data[pos:pos] = bytes([rng.randrange(256)]) * rng.randint(1, 40)
                else:
                    data[pos] = rng.randrange(256)
            raw(self.server.http, bytes(data), timeout=0.3)
            if i % 50 == 0:
                self.assert_served()
        self.assert_served()
        self.assertIsNone(self.server.proc.poll())


def peer_bytes(server):
    """(received, sent) bytes of `server`'s only peer, from /metrics."""
    _, body, _ = curl("GET", server.base + "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    out = []
    for name in ("peerkv_peer_received_bytes", "peerkv_peer_sent_bytes"):
        samples = [s for s in families[name].samples if s.name == name + "_total"]
        assert len(samples) == 1, samples
        out.append(samples[0].value)
    return tuple(out)


class HttpPeersTest(unittest.TestCase):
    def test_peer_in_status_and_metrics(self):
        # Two devices of one user: their link is TLS, pinned by key.
        a_data = os.path.join(tmpdir("alpha"), "data")
        b_data = os.path.join(tmpdir("beta"), "data")
        pair(a_data, b_data)
        a = Server(data=a_data, extra=["--http-insecure-loopback", "--replica-name", "alpha",
                                       "--gossip-interval-ms", "100"])
        b = None
        try:
            b = Server(data=b_data, extra=["--http-insecure-loopback", "--replica-name", "beta",
                                           "--gossip-interval-ms", "100", "--peer", a.rpc])
            cli("--server", a.sock, "put", "shared", "k", "v")
            # Bounded wait for the link to come up and the record to arrive.
            deadline = time.monotonic() + 20
            while True:
                _, body, _ = curl("GET", b.base + "/v1/status")
                peers = json.loads(body)["peers"]
                code, value, _ = curl("GET", b.base + "/v1/kv/shared/k")
                if peers and peers[0]["reachable"] and code == 200:
                    break
                self.assertLess(time.monotonic(), deadline, body)
                time.sleep(0.05)
            self.assertEqual(value, b"v")
            self.assertEqual(peers[0]["address"], a.rpc)
            self.assertIsNotNone(peers[0]["last_exchange_ms_ago"])
            _, body, _ = curl("GET", b.base + "/metrics")
            families = {f.name: f for f in text_string_to_metric_families(body.decode())}
            reach = families["peerkv_peer_reachable"].samples
            self.assertEqual(len(reach), 1)
            self.assertEqual(reach[0].labels["address"], a.rpc)
            self.assertEqual(reach[0].value, 1)
            self.assertEqual(len(families["peerkv_peer_last_exchange_age_seconds"].samples), 1)
            self.assertIn("peerkv_peer_behind_records", families)
            self.assertIn("peerkv_peer_refused_records", families)
            # Bytes in and out per peer, on both sides of the link, grow
            # with the records it carries.
            b_in, b_out = peer_bytes(b)
            a_in, a_out = peer_bytes(a)
            for v in (b_in, b_out, a_in, a_out):
                self.assertGreater(v, 0)
            big = "x" * 20000
            cli("--server", a.sock, "put", "shared", "big", big)
            deadline = time.monotonic() + 20
            while curl("GET", b.base + "/v1/kv/shared/big")[0] != 200:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
            b_in2, b_out2 = peer_bytes(b)
            a_in2, a_out2 = peer_bytes(a)
            self.assertGreaterEqual(b_in2 - b_in, 20000)
            self.assertGreaterEqual(a_out2 - a_out, 20000)
            self.assertGreater(b_out2, b_out)
            self.assertGreater(a_in2, a_in)
        finally:
            if b is not None:
                self.assertEqual(b.stop(), 0)
            self.assertEqual(a.stop(), 0)


def resp_command(address, *args, timeout=5):
    """Sends one RESP command on a new connection; returns the reply bytes."""
    host, port = address.rsplit(":", 1)
    frame = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(frame)
        return s.recv(4096)


class IdleConnectionsTest(unittest.TestCase):
    """5,000 idle TCP connections on the HTTP port and 5,000 on the RESP port:
    every other client is still served within a bound, and once they close
    the server's file descriptors return to their level."""

    N = 5000

    def test_5000_idle_connections_on_each_port(self):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 2 * self.N + 200
        if hard != resource.RLIM_INFINITY and hard < need:
            self.skipTest(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
        server = Server(extra=["--http-insecure-loopback", "--http-max-connections", "6000",
                               "--http-idle-timeout-ms", "60000", "--resp-listen", "127.0.0.1:0",
                               "--resp-insecure-loopback", "--resp-max-connections", "6000"],
                        soft_nofile=1024)
        try:
            # Started with a soft limit of 1024 open files, the server
            # raised it to the hard limit.
            line = server.wait_for_log("open files: limit", 5)
            self.assertIn("(raised from 1024)", line)
            m = re.search(r"RESP clients: (\S+) ", "\n".join(server.log))
            resp = m.group(1)
            self.assertEqual(resp_command(resp, b"SET", b"k", b"v"), b"+OK\r\n")
            fds_before = server.open_fds()
            socks = []
            try:
                for address in (resp, server.http):
                    host, port = address.rsplit(":", 1)
                    for _ in range(self.N):
                        socks.append(socket.create_connection((host, int(port)), timeout=10))
                # Bounded wait until the server has accepted them all (2
                # short: the SET's connection may still have been counted
                # in fds_before). The HTTP ones were opened last: they send
                # no request, so the server closes them 10 s after they
                # opened (the header timeout, min(idle timeout, 10 s)), and
                # what follows runs well inside that.
                deadline = time.monotonic() + 9
                while server.open_fds() < fds_before + 2 * self.N - 2:
                    self.assertLess(time.monotonic(), deadline,
                                    f"{server.open_fds() - fds_before} of {2 * self.N} accepted")
                    time.sleep(0.05)
                # Every other client is served, within a bound.
                for _ in range(5):
                    start = time.monotonic()
                    code, body, _ = curl("GET", server.base + "/v1/status", timeout=5)
                    self.assertEqual(code, 200, body)
                    self.assertEqual(resp_command(resp, b"GET", b"k"), b"$1\r\nv\r\n")
                    self.assertLess(time.monotonic() - start, 2.0)
                # None of the idle ones was closed or answered.
                for s in socks[::97]:
                    s.setblocking(False)
                    with self.assertRaises(BlockingIOError):
                        s.recv(1)
            finally:
                for s in socks:
                    s.close()
            # Descriptors return to their level (bounded wait).
            deadline = time.monotonic() + 30
            while server.open_fds() > fds_before + 2:
                self.assertLess(time.monotonic(), deadline,
                                f"{server.open_fds() - fds_before} descriptors still open")
                time.sleep(0.05)
            code, body, _ = curl("GET", server.base + "/v1/status", timeout=5)
            self.assertEqual(code, 200, body)
            self.assertIsNone(server.proc.poll())
        finally:
            self.assertEqual(server.stop(), 0)


class HttpFlagsTest(unittest.TestCase):
    def test_non_loopback_is_refused(self):
        data = os.path.join(os.environ.get("TEST_TMPDIR", "/tmp"), "nl")
        rc, _, err = cli("serve", "--data", data, "--listen", "127.0.0.1:0",
                         "--http-listen", "0.0.0.0:0", check=False)
        self.assertEqual(rc, 2)
        self.assertIn("not a loopback address", err)
        rc, _, err = cli("serve", "--data", data, "--listen", "127.0.0.1:0",
                         "--http-insecure-loopback", check=False)
        self.assertEqual(rc, 2)
        self.assertIn("need --http-listen", err)

    def test_insecure_loopback(self):
        server = Server(extra=["--http-insecure-loopback"])
        try:
            code, body, _ = curl("PUT", server.base + "/v1/kv/ks/a", data=b"1")
            self.assertEqual(code, 200, body)
            code, body, _ = curl("GET", server.base + "/v1/kv/ks/a")
            self.assertEqual(body, b"1")
        finally:
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
