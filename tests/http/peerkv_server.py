"""tests/http/peerkv_server.py: a real `peerkv serve` process with the
HTTP front end, for the HTTP process and browser tests: loopback, port 0
(the HTTP and RPC ports are read from its log), a data directory under
TEST_TMPDIR, stopped by its own PID."""

import os
import re
import signal
import subprocess
import tempfile
import threading
import time

PEERKV = os.path.abspath(os.environ.get("PEERKV", "cli/peerkv"))


def tmpdir(tag):
    return tempfile.mkdtemp(prefix=tag, dir=os.environ.get("TEST_TMPDIR"))


def cli(*args, check=True):
    """Runs the peerkv command; returns (exit code, stdout, stderr)."""
    p = subprocess.run([PEERKV, *args], capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"peerkv {args} exited {p.returncode}: {p.stderr}")
    return p.returncode, p.stdout, p.stderr


class Server:
    def __init__(self, extra=(), data=None, http_listen="127.0.0.1:0"):
        self.data = data or os.path.join(tmpdir("http"), "data")
        self.proc = subprocess.Popen(
            # --insecure-loopback: these tests are about HTTP; the CLI calls
            # and the peer link they make go to the RPC port in plaintext
            # (tests/tls_test covers TLS).
            [PEERKV, "serve", "--data", self.data, "--listen", "127.0.0.1:0",
             "--insecure-loopback", "--http-listen", http_listen, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="backslashreplace")
        self.log = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self.wait_for_log("listening on", 30)
        m = re.search(r"listening on (\S+),", line)
        self.rpc = m.group(1)
        m = re.search(r"HTTP on http://([^/\s]+)/", "\n".join(self.log))
        self.http = m.group(1)
        self.base = "http://" + self.http

    def _read(self):
        for line in self.proc.stderr:
            with self._cond:
                self.log.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_log(self, text, seconds):
        deadline = time.monotonic() + seconds
        with self._cond:
            while True:
                for line in self.log:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no '{text}' in the server log:\n" + "\n".join(self.log))
                self._cond.wait(left)

    def pid(self):
        return self.proc.pid

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode
