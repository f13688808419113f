"""tests/http/status_page_browser_test.py: the status page in real headless
Debian chromium, driven over the DevTools protocol (a minimal websocket
client below). Loads the page of a real server with a token in #token=,
waits (on DOM events, bounded) until its feed is watching, writes a record
through the CLI, waits until the record appears on the page, and saves a
screenshot (TEST_UNDECLARED_OUTPUTS_DIR/status_page.png) that it checks is
not blank."""

import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import unittest
import urllib.request
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peerkv_server import Server, cli, tmpdir  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class WebSocket:
    """Just enough RFC 6455 for DevTools: text frames, client-masked."""

    def __init__(self, url, timeout=30):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        self.sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {m.group(3)} HTTP/1.1\r\nHost: {m.group(1)}:{m.group(2)}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self._read(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise AssertionError(f"websocket handshake failed: {head!r}")

    def _read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise AssertionError("DevTools connection closed")
            out += chunk
        return out

    def send(self, text):
        data = text.encode()
        header = bytes([0x81])
        if len(data) < 126:
            header += bytes([0x80 | len(data)])
        elif len(data) < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(data))
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(length)
            opcode = b0 & 0x0F
            if opcode == 8:
                raise AssertionError("DevTools closed the websocket")
            if opcode in (9, 10):
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()


class DevTools:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    def wait_js(self, condition, what, timeout_ms=20000):
        """Resolves when `condition` (a JS expression) is true, re-checked on
        every DOM mutation; fails after timeout_ms."""
        expr = f"""new Promise((resolve, reject) => {{
          const check = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
          if (check()) return resolve(true);
          const obs = new MutationObserver(() => {{ if (check()) {{ obs.disconnect(); resolve(true); }} }});
          obs.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
          setTimeout(() => {{ obs.disconnect(); reject(new Error("timed out: {what}")); }}, {timeout_ms});
        }})"""
        result = self.call("Runtime.evaluate", expression=expr, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            body = self.call("Runtime.evaluate", expression="document.body.innerText",
                             returnByValue=True)
            raise AssertionError(f"waiting for {what}: {result['exceptionDetails']}; page: "
                                 f"{body['result'].get('value')}")


def png_pixels(png):
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", data[:10])
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


class StatusPageBrowserTest(unittest.TestCase):
    def test_record_appears_on_the_page(self):
        server = Server()
        browser = None
        try:
            _, out, _ = cli("--data", server.data, "token", "create", "browser")
            token = out.strip()
            profile = tmpdir("chromium")
            browser = subprocess.Popen(
                [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                 "--remote-debugging-port=0", f"--user-data-dir={profile}",
                 "--window-size=1000,800", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                errors="backslashreplace", start_new_session=True)
            # Its first lines name the DevTools endpoint (bounded: 60 s).
            found = {}
            done = threading.Event()

            def read():
                for line in browser.stderr:
                    m = re.search(r"DevTools listening on (ws://\S+)", line)
                    if m and not done.is_set():
                        found["url"] = m.group(1)
                        done.set()
                done.set()

            threading.Thread(target=read, daemon=True).start()
            self.assertTrue(done.wait(60) and "url" in found, "chromium gave no DevTools URL")
            port = re.match(r"ws://[^:]+:(\d+)/", found["url"]).group(1)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            tools = DevTools(WebSocket(pages[0]["webSocketDebuggerUrl"]))
            tools.call("Page.enable")
            tools.call("Runtime.enable")
            tools.call("Page.navigate", url=f"{server.base}/?keyspace=browser#token={token}")
            tools.wait_js("document.body && document.body.dataset.watching === 'browser'",
                          "the feed to open")
            tools.wait_js("document.querySelector('#replica td')", "the replica table")
            cli("--server", server.sock, "put", "browser", "hello", "from the CLI")
            tools.wait_js("document.querySelector('#feed li[data-key=\"hello\"]')",
                          "the record on the page")
            text = tools.call("Runtime.evaluate",
                              expression="document.querySelector('#feed li').textContent",
                              returnByValue=True)["result"]["value"]
            self.assertIn("hello = from the CLI", text)
            shot = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
            outdir = os.environ.get("TEST_UNDECLARED_OUTPUTS_DIR", tmpdir("shot"))
            with open(os.path.join(outdir, "status_page.png"), "wb") as f:
                f.write(shot)
            width, height, bpp, rows = png_pixels(shot)
            self.assertGreater(width, 100)
            colours = {}
            for row in rows[::4]:
                for x in range(0, width * bpp, bpp * 4):
                    px = row[x:x + 3]
                    colours[px] = colours.get(px, 0) + 1
            total = sum(colours.values())
            background = max(colours.values())
            # Not blank: text and tables draw many colours over a good share.
            self.assertGreater(len(colours), 10)
            self.assertGreater(total - background, total // 100)
            try:
                tools.call("Browser.close")
            except AssertionError:
                pass
        finally:
            if browser is not None:
                try:
                    browser.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(browser.pid, signal.SIGKILL)
                    browser.wait()
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
