"""A real rsyslogd for end-to-end tests: own config, own work directory, loopback ports only.

Every input (UDP, TCP or TLS, a unix datagram socket through imuxsock, a unix stream socket
through imptcp) is bound to one ruleset that writes `%rawmsg%` — the bytes exactly as they
arrived, minus the transport framing — to `received.log`, each followed by `END_MARK` and a
newline, so tests can split on the mark and compare exact bytes even when a message holds
newlines. rsyslog's own status lines go to `internal.log`, which helps when a test fails.

The ports are chosen once, so `stop()` + `start()` brings the server back on the same
addresses: that is how the outage tests take syslog down and up again.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.tlsutil import TlsFiles

RSYSLOGD = "/usr/sbin/rsyslogd"
END_MARK = b"<<END>>\n"


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port the kernel just handed out on 127.0.0.1 (free for TCP and UDP alike, usually)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RsyslogServer:
    """One rsyslogd in the foreground (`-n`), configured from scratch in `workdir`."""

    def __init__(self, workdir: Path, *, tls: TlsFiles | None = None,
                 require_client_cert: bool = False, max_message_size: int = 8192) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "spool").mkdir(exist_ok=True)
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.max_message_size = max_message_size
        self.tcp_port = free_port(socket.SOCK_STREAM)
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.dgram_socket = workdir / "log.dgram"
        self.stream_socket = workdir / "log.stream"
        self.output = workdir / "received.log"
        self.pidfile = workdir / "rsyslogd.pid"
        self.config_path = workdir / "rsyslog.conf"
        self.config_path.write_text(self._config())
        self.proc: subprocess.Popen[bytes] | None = None

    # -- configuration ------------------------------------------------------------------------
    def _config(self) -> str:
        w = self.workdir
        lines = [
            f'global(workDirectory="{w / "spool"}" maxMessageSize="{self.max_message_size}"',
            '       parser.escapeControlCharactersOnReceive="off")',
        ]
        if self.tls is not None:
            lines.append(
                f'global(defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{self.tls.ca_cert}"'
                f' defaultNetstreamDriverCertFile="{self.tls.server_cert}"'
                f' defaultNetstreamDriverKeyFile="{self.tls.server_key}")'
            )
            auth = "x509/certvalid" if self.require_client_cert else "anon"
            lines.append(
                f'module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"'
                f' streamDriver.authMode="{auth}")'
            )
        else:
            lines.append('module(load="imtcp")')
        lines += [
            'module(load="imudp")',
            'module(load="imuxsock" sysSock.use="off")',
            'module(load="imptcp")',
            f'template(name="raw" type="string" string="%rawmsg%{END_MARK.decode().rstrip()}\\n")',
            'ruleset(name="remote") {',
            f'  action(type="omfile" file="{self.output}" template="raw" flushOnTXEnd="on"'
            ' asyncWriting="off")',
            "}",
            f'action(type="omfile" file="{w / "internal.log"}")',
            f'input(type="imtcp" port="{self.tcp_port}" address="127.0.0.1" ruleset="remote")',
            f'input(type="imudp" port="{self.udp_port}" address="127.0.0.1" ruleset="remote")',
            f'input(type="imuxsock" socket="{self.dgram_socket}" ruleset="remote"'
            ' useSpecialParser="off" parseHostname="on" createPath="on")',
            f'input(type="imptcp" path="{self.stream_socket}" ruleset="remote")',
        ]
        return "\n".join(lines) + "\n"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout_s: float = 15.0) -> RsyslogServer:
        if self.proc is not None:
            return self
        for stale in (self.pidfile, self.dgram_socket, self.stream_socket):
            stale.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.config_path), "-i", str(self.pidfile)],
            cwd=self.workdir, stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "stderr.log").open("ab"),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}: {self.diagnostics()}")
            if self._ready():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"rsyslogd did not come up in {timeout_s}s: {self.diagnostics()}")

    def _ready(self) -> bool:
        if not (self.pidfile.exists() and self.dgram_socket.exists() and self.stream_socket.exists()):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM and wait: rsyslog writes out what it has already read, as in production."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    # -- what arrived -------------------------------------------------------------------------
    def messages(self) -> list[bytes]:
        """Every message received so far, as raw bytes without framing, in arrival order."""
        try:
            data = self.output.read_bytes()
        except FileNotFoundError:
            return []
        parts = data.split(END_MARK)
        return parts[:-1]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[bytes]:
        """Wait until at least `count` messages arrived; return them all (fewer on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.messages()
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def diagnostics(self) -> str:
        out = []
        for name in ("stderr.log", "internal.log"):
            path = self.workdir / name
            if path.exists():
                out.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def __enter__(self) -> RsyslogServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


