"""tests/http/peerkv_server.py: a real `peerkv serve` process with the
HTTP front end, for the HTTP process and browser tests: loopback, port 0
(the HTTP and RPC ports are read from its log), a data directory under
TEST_TMPDIR, stopped by its own PID. The CLI reaches it through its Unix
socket (`Server.sock`); servers that peer are made devices of one user
with the product's own pairing commands (`pair`), so their link is TLS."""

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


def identity(data):
    """(device id, user id) of an initialised data directory (`peerkv id`)."""
    _, out, _ = cli("--data", data, "id")
    fields = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    return fields["device"], fields["user"].split(" ")[0]


def pair(first, second):
    """Makes data directory `second` a device of `first`'s user, as README's
    pairing walkthrough does: `init --user` on the first, `init --join` on the
    second, `device add` on the first. Neither may be initialised yet."""
    cli("--data", first, "init", "--user", "test")
    _, user = identity(first)
    cli("--data", second, "init", "--join", user)
    device, _ = identity(second)
    cli("--data", first, "device", "add", device, "--name", os.path.basename(second))


class Server:
    def __init__(self, extra=(), data=None, http_listen="127.0.0.1:0", soft_nofile=None):
        """`soft_nofile`: start the server with that soft RLIMIT_NOFILE."""
        self.data = data or os.path.join(tmpdir("http"), "data")
        preexec = None
        if soft_nofile is not None:
            def preexec():
                import resource
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft_nofile, hard))
        self.proc = subprocess.Popen(preexec_fn=preexec, args=
            [PEERKV, "serve", "--data", self.data, "--listen", "127.0.0.1:0",
             "--http-listen", http_listen, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="backslashreplace")
        self.log = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self.wait_for_log("listening on", 30)
        m = re.search(r"listening on (\S+),", line)
        self.rpc = m.group(1)
        self.sock = "unix:" + os.path.join(self.data, "peerkv.sock")
        m = re.search(r"HTTP on (https?)://([^/\s]+)/", "\n".join(self.log))
        self.http = m.group(2)
        self.base = m.group(1) + "://" + self.http

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
