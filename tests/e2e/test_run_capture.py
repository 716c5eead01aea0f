"""`sluice run -- COMMAND` with real programs (Node, sh, Python) against a real receiver: what the
terminal shows, what the receiver stores, exit codes and signals, floods and a receiver outage."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice._spill import SpillQueue
from tests.receiver_process import ReceiverProcess, endpoints

SLUICE_RUN = [sys.executable, "-m", "sluice_collector", "run"]
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")

SERVER_JS = r"""
const line = (o) => process.stdout.write(JSON.stringify(o) + "\n");
console.log("\x1b[32mlistening\x1b[0m on port 3000");
const t = Date.now();
line({level: 30, time: t, pid: process.pid, hostname: "box", reqId: "r-1", msg: "request served"});
line({level: 40, msg: "slow request", durationMs: 1234, route: {name: "repos", page: 2}});
console.log('127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] "GET /repos?page=2 HTTP/1.1" 200 512');
console.error(new Error("boom").stack);
process.stdout.write("shutting down\n");
process.stdout.write("time " + t + "\n");
process.exitCode = 3;
"""

USER_KEY = "u7-key-0123456789abcdef0123"
ADMIN_KEY = "admin-key-0123456789abcdef"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith(("SLUICE_", "OTEL_")):
            del env[name]
    env.update(SLUICE_SPILL_DIR=str(tmp_path / "spill"), SLUICE_SCHEDULE_DELAY_S="0.2",
               SLUICE_EXIT_TIMEOUT_S="20", SLUICE_RUNTIME_METRICS="false", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    proc = ReceiverProcess(tmp_path, {"query": {"api_keys": {
        "ops": {"key": ADMIN_KEY, "role": "admin"},
        "u7": {"key": USER_KEY, "role": "user", "user_id": "u-7"},
    }}}).start()
    try:
        yield proc
    finally:
        proc.kill()


def bodies(proc: ReceiverProcess, category: str) -> list[str]:
    return [r["body"] for r in proc.read(category)]


@needs_node
def test_acceptance_a_node_program_under_sluice_run(tmp_path: Path, receiver: ReceiverProcess) -> None:
    """`sluice run --service-name mcp-github --resource-attribute user.id=u-7 -- node server.js`:
    stdout lines in app, the stderr stack trace in error as one record, JSON fields kept, every
    record carrying user.id=u-7 (and found with that user's key), the program's bytes and exit code."""
    (tmp_path / "server.js").write_text(SERVER_JS)
    plain = subprocess.run([NODE, "server.js"], cwd=tmp_path, capture_output=True, timeout=60,
                           env=env_for(tmp_path))
    run = subprocess.run(
        [*SLUICE_RUN, "--service-name", "mcp-github", "--resource-attribute", "user.id=u-7",
         "--endpoint", f"http://{receiver.endpoint}", "--", "node", "server.js"],
        cwd=tmp_path, capture_output=True, timeout=60, env=env_for(tmp_path))
    assert plain.returncode == 3
    assert run.returncode == 3, run.stderr
    t = run.stdout.decode().rsplit("time ", 1)[1].strip()

    def same(out: bytes) -> bytes:  # the program's clock and pid differ from run to run
        return re.sub(rb'"pid":\d+', b'"pid":P', re.sub(rb"\d{13}", b"T", out))

    assert b"\x1b[32mlistening\x1b[0m" in run.stdout
    assert same(run.stdout) == same(plain.stdout)
    assert run.stderr == plain.stderr  # the stack trace, and nothing of sluice's own

    # The user's query key finds every record of the run (the index follows the files).
    deadline = time.monotonic() + 60
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        out = subprocess.run(
            [sys.executable, "-m", "sluice_collector", "logs", "query", "--endpoint", receiver.endpoint,
             "--api-key", USER_KEY, "--json", "--service", "mcp-github", "--limit", "100"],
            capture_output=True, text=True, timeout=60)
        found = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        if len(found) >= 7:
            break
        time.sleep(0.2)
    assert len(found) == 7, found
    assert receiver.stop(signal.SIGTERM) == 0

    app, error, access = receiver.read("app"), receiver.read("error"), receiver.read("access")
    assert [r["body"] for r in app] == ["listening on port 3000", "request served", "slow request",
                                        "shutting down", f"time {t}"]
    served = app[1]
    assert served["severity"] == "INFO"
    assert {k: served["attributes"][k] for k in ("pid", "hostname", "reqId")} == {
        "pid": served["resource"]["process.pid"], "hostname": "box", "reqId": "r-1"}
    assert served["timestamp"].startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(int(t) / 1000)))
    assert app[2]["severity"] == "WARN"
    assert app[2]["attributes"]["route"] == {"name": "repos", "page": 2}
    [trace] = error
    assert trace["body"].startswith("Error: boom\n    at ")
    assert trace["body"].count("\n    at ") >= 2
    assert trace["severity"] == "ERROR"
    assert trace["attributes"]["log.iostream"] == "stderr"
    assert trace["attributes"]["exception.type"] == "Error"
    [request] = access
    assert request["attributes"]["http.request.method"] == "GET"
    assert request["attributes"]["http.response.status_code"] == 200
    everything = app + error + access
    for record in everything:
        assert record["service.name"] == "mcp-github"
        assert record["resource"]["user.id"] == "u-7"
        assert record["attributes"]["user.id"] == "u-7"
        assert record["resource"]["process.command_args"] == ["node", "server.js"]
        assert record["resource"]["process.executable.name"] == "node"
        assert isinstance(record["resource"]["process.pid"], int)
        assert "log.category" not in record["attributes"]
    assert {r["attributes"]["log.iostream"] for r in app} == {"stdout"}


def _read_master(fd: int, sink: bytearray) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        sink += data


def _run_on_ptys(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """Run with stdout on one pty and stderr on another; what each terminal received."""
    out_master, out_slave = os.openpty()
    err_master, err_slave = os.openpty()
    for slave in (out_slave, err_slave):
        fcntl.ioctl(slave, termios.TIOCSWINSZ, b"\x18\x00\x50\x00\x00\x00\x00\x00")  # 24x80
    out, err = bytearray(), bytearray()
    readers = [threading.Thread(target=_read_master, args=(out_master, out)),
               threading.Thread(target=_read_master, args=(err_master, err))]
    for reader in readers:
        reader.start()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out_slave,
                            stderr=err_slave)
    os.close(out_slave)
    os.close(err_slave)
    code = proc.wait(60)
    for reader in readers:
        reader.join(30)
    os.close(out_master)
    os.close(err_master)
    return code, bytes(out), bytes(err)


TTY_JS = r"""
process.stdout.write("isatty " + process.stdout.isTTY + " " + process.stderr.isTTY + "\n");
process.stdout.write("cols " + process.stdout.columns + "\n");
process.stdout.write("\x1b[1;31mred\x1b[0m and plain\r\n");
process.stdout.write("progress 10%\rprogress 60%\rprogress 100%\n");
process.stdout.write("Password: ");
process.stderr.write("warning: ünïcödé \u2713\n");
process.stdout.write("\nno newline at the end");
"""


@needs_node
def test_terminal_output_is_byte_identical_on_a_terminal(tmp_path: Path, receiver: ReceiverProcess) -> None:
    """On terminals the program still sees terminals (isatty, size), and each terminal receives
    exactly the bytes it would without sluice: colours, \\r, prompts, a last partial line."""
    (tmp_path / "tty.js").write_text(TTY_JS)
    env = env_for(tmp_path)
    plain = _run_on_ptys([NODE, "tty.js"], tmp_path, env)
    run = _run_on_ptys([*SLUICE_RUN, "--endpoint", f"http://{receiver.endpoint}", "--service-name", "tty",
                        "--", NODE, "tty.js"], tmp_path, env)
    assert plain[1].startswith(b"isatty true true\r\ncols 80\r\n")
    assert run == plain
    assert receiver.stop(signal.SIGTERM) == 0
    app = receiver.read("app")
    assert [r["body"] for r in app if r["attributes"]["log.iostream"] == "stdout"] == [
        "isatty true true", "cols 80", "red and plain", "progress 100%", "Password: ", "no newline at the end"]
    [warning] = [r for r in app if r["attributes"]["log.iostream"] == "stderr"]
    assert (warning["body"], warning["severity"]) == ("warning: ünïcödé \u2713", "WARN")
    assert receiver.read("error") == []


FLOOD_LINE = b"x" * 4095 + b"\n"
FLOOD_BYTES = 100 * 1024 * 1024


def test_a_100_mb_flood_passes_through_whole_and_every_line_is_shipped_spilled_or_counted(
    tmp_path: Path,
) -> None:
    """The program's 100 MB reach the reader unchanged while the capture keeps its bounds: every
    line is stored, spilled, or reported as dropped — none silently lost, and the run ends."""
    proc = ReceiverProcess(tmp_path, {"masking": {"enabled": False}}).start()
    try:
        script = f"yes '{'x' * 4095}' | head -c {FLOOD_BYTES}"
        run = subprocess.Popen([*SLUICE_RUN, "--endpoint", f"http://{proc.endpoint}", "--service-name",
                                "flood", "--", "sh", "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env_for(tmp_path, SLUICE_EXIT_TIMEOUT_S="3"))
        assert run.stdout is not None
        digest = hashlib.sha256()
        size = 0
        while chunk := run.stdout.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        stderr = run.stderr.read().decode() if run.stderr else ""
        assert run.wait(120) == 0, stderr
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        proc.kill()
    lines = FLOOD_BYTES // len(FLOOD_LINE)
    assert size == FLOOD_BYTES
    assert digest.hexdigest() == hashlib.sha256(FLOOD_LINE * lines).hexdigest()
    stored = 0
    for path in proc.logs_dir.glob("app.log*"):  # the active file and the rotated, gzipped ones
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        stored += data.count(b"\n")
    match = re.search(r"(\d+) lines and (\d+) records were not shipped", stderr)
    dropped = int(match.group(1)) + int(match.group(2)) if match else 0
    spill = SpillQueue(tmp_path / "spill", 1 << 40)
    spilled = 0
    while (claimed := spill.claim()) is not None:
        spilled += len(claimed.entries)
    assert stored > 0
    assert stored + dropped + spilled == lines, (stored, dropped, spilled, stderr)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_sent_to_sluice_run_reach_the_program_and_its_exit_code_comes_back(
    tmp_path: Path, receiver: ReceiverProcess, sig: signal.Signals,
) -> None:
    name = sig.name.removeprefix("SIG")
    script = f'trap "echo got {name}; exit 7" {name}; echo ready; while :; do sleep 0.05; done'
    run = subprocess.Popen([*SLUICE_RUN, "--endpoint", f"http://{receiver.endpoint}", "--service-name", "sig",
                            "--", "sh", "-c", script], stdout=subprocess.PIPE, env=env_for(tmp_path))
    assert run.stdout is not None
    assert run.stdout.readline() == b"ready\n"
    run.send_signal(sig)
    assert run.stdout.read() == f"got {name}\n".encode()
    assert run.wait(60) == 7
    assert receiver.stop(signal.SIGTERM) == 0
    assert bodies(receiver, "app") == ["ready", f"got {name}"]


def test_a_program_killed_by_sigterm_makes_sluice_run_die_the_same_way_after_flushing(
    tmp_path: Path, receiver: ReceiverProcess,
) -> None:
    run = subprocess.Popen([*SLUICE_RUN, "--endpoint", f"http://{receiver.endpoint}", "--service-name", "term",
                            "--", "sh", "-c", "echo ready; echo 'ERROR about to wait' >&2; exec sleep 600"],
                           stdout=subprocess.PIPE, env=env_for(tmp_path))
    assert run.stdout is not None
    assert run.stdout.readline() == b"ready\n"
    run.send_signal(signal.SIGTERM)
    assert run.wait(60) == -signal.SIGTERM
    assert receiver.stop(signal.SIGTERM) == 0
    assert bodies(receiver, "app") == ["ready"]
    assert bodies(receiver, "error") == ["ERROR about to wait"]


WITNESS_PY = """
import signal, sys
def on_int(signum, frame):
    print("witness got INT", flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, on_int)
print("witness ready", flush=True)
while True:
    signal.pause()
"""

CTRL_C_PY = """
import os, signal, subprocess, sys
witness = subprocess.Popen([sys.executable, "witness.py"])  # stays in sluice run's process group
count = 0
def on_int(signum, frame):
    global count
    count += 1
def on_usr1(signum, frame):
    print(f"program got INT x{count}", flush=True)
    witness.wait()
    sys.exit(0)
signal.signal(signal.SIGINT, on_int)
signal.signal(signal.SIGUSR1, on_usr1)
os.setpgid(0, 0)  # out of the foreground group: the terminal's SIGINT can only reach us forwarded
print("program ready", flush=True)
while True:
    signal.pause()
"""


def test_ctrl_c_on_the_terminal_is_not_forwarded_a_second_time(tmp_path: Path, receiver: ReceiverProcess) -> None:
    """The terminal sends SIGINT to its whole foreground process group — sluice run and, as it is
    started in that group, the program. sluice run must not forward it again (many programs take
    a second Ctrl-C as "quit now"). To see a forwarded copy without the two merging, the program
    here leaves the group, leaving a witness behind in it: once the witness has its SIGINT, the
    terminal's signal is pending at sluice run too. Then SIGUSR1, sent by a process, must be
    forwarded; sluice run takes pending signals lowest number first, so a forwarded SIGINT would
    reach the program before it."""
    (tmp_path / "ctrlc.py").write_text(CTRL_C_PY)
    (tmp_path / "witness.py").write_text(WITNESS_PY)
    master, slave = os.openpty()
    # A new session whose controlling terminal is the pty, then sluice run in its foreground group.
    with_ctty = [sys.executable, "-c", "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                 "os.execv(sys.argv[1], sys.argv[1:])"]
    run = subprocess.Popen(
        [*with_ctty, *SLUICE_RUN, "--no-instrument", "--endpoint", f"http://{receiver.endpoint}",
         "--service-name", "ctrlc", "--", sys.executable, "ctrlc.py"],
        cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=env_for(tmp_path))
    os.close(slave)
    seen = bytearray()

    def wait_for(text: bytes) -> None:
        while text not in seen:
            data = os.read(master, 4096)
            assert data, seen
            seen.extend(data)

    wait_for(b"witness ready")
    wait_for(b"program ready")
    os.write(master, b"\x03")
    wait_for(b"witness got INT")
    run.send_signal(signal.SIGUSR1)
    wait_for(b"program got INT x")
    wait_for(b"\n")
    while not re.search(rb"program got INT x\d+\r\n", seen):
        data = os.read(master, 4096)
        assert data, seen
        seen.extend(data)
    assert run.wait(60) == 0
    os.close(master)
    assert re.search(rb"program got INT x(\d+)", seen).group(1) == b"0", seen  # type: ignore[union-attr]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_output_made_while_the_receiver_is_down_is_spilled_then_delivered(tmp_path: Path) -> None:
    port = _free_port()
    spill = tmp_path / "spill"
    (tmp_path / "work").mkdir()
    script = "echo before-1; echo before-2; while [ ! -e go ]; do sleep 0.05; done; echo after-1"
    run = subprocess.Popen(
        [*SLUICE_RUN, "--endpoint", f"http://127.0.0.1:{port}", "--service-name", "outage",
         "--resource-attribute", "user.id=u-7", "--", "sh", "-c", script],
        cwd=tmp_path / "work", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env_for(tmp_path, SLUICE_EXPORT_TIMEOUT_S="0.5", SLUICE_EXIT_TIMEOUT_S="30"))
    try:
        deadline = time.monotonic() + 60
        while not list(spill.glob("*.spill")):
            assert run.poll() is None
            assert time.monotonic() < deadline, "nothing was spilled while the receiver was down"
            time.sleep(0.05)
        proc = ReceiverProcess(tmp_path, {"receivers": endpoints(f"127.0.0.1:{port}")}).start()
        try:
            (tmp_path / "work" / "go").touch()
            out, err = run.communicate(timeout=90)
            assert run.returncode == 0, err
            assert out == b"before-1\nbefore-2\nafter-1\n"
            assert proc.stop(signal.SIGTERM) == 0
        finally:
            proc.kill()
    finally:
        if run.poll() is None:  # a failed assertion must not leave the program waiting forever
            (tmp_path / "work" / "go").touch()
            run.kill()
            run.wait(10)
    records = proc.read("app")
    assert sorted(r["body"] for r in records) == ["after-1", "before-1", "before-2"]
    assert {r["resource"]["user.id"] for r in records} == {"u-7"}
    assert not list(spill.glob("*.spill"))


PY_APP = """
import logging, sys
logging.basicConfig(level=logging.INFO)
log = logging.getLogger("shop.orders")
log.warning("order placed", extra={"order.id": "Z-1"})
print("plain print")
try:
    {}["missing"]
except KeyError:
    log.exception("lookup failed")
print("to stderr", file=sys.stderr)
raise ValueError("unhandled")
"""


def test_a_python_programs_logging_is_shipped_once_by_its_sdk_and_the_rest_is_captured(
    tmp_path: Path, receiver: ReceiverProcess,
) -> None:
    (tmp_path / "app.py").write_text(PY_APP)
    run = subprocess.run(
        [*SLUICE_RUN, "--endpoint", f"http://{receiver.endpoint}", "--service-name", "shop", "--",
         sys.executable, "app.py"],
        cwd=tmp_path, capture_output=True, timeout=60, env=env_for(tmp_path))
    assert run.returncode == 1
    assert run.stdout == b"plain print\n"
    assert run.stderr.startswith(b"WARNING:shop.orders:order placed\nERROR:shop.orders:lookup failed\n")
    assert receiver.stop(signal.SIGTERM) == 0
    app, error = receiver.read("app"), receiver.read("error")
    [placed] = [r for r in app if r["body"] == "order placed"]
    assert placed["scope"]["name"] == "shop.orders"  # the bridge's record, with its extra= field
    assert placed["attributes"]["order.id"] == "Z-1"
    assert "log.iostream" not in placed["attributes"]
    [printed] = [r for r in app if r["body"] == "plain print"]
    assert printed["attributes"]["log.iostream"] == "stdout"
    assert len(app) == 2
    [lookup] = [r for r in error if r["body"] == "lookup failed"]
    assert lookup["attributes"]["exception.type"] == "KeyError"
    [crash] = [r for r in error if r["body"].startswith("Traceback")]
    assert crash["attributes"]["exception.type"] == "ValueError"
    assert crash["attributes"]["log.iostream"] == "stderr"
    assert [r["body"] for r in error if r["attributes"].get("log.iostream") == "stderr"] == [
        "to stderr", crash["body"]]
    assert len(error) == 3


def test_secret_flags_of_the_command_are_redacted_in_the_stored_command_args(
    tmp_path: Path, receiver: ReceiverProcess,
) -> None:
    """`sluice run -- prog --password hunter3 --token=abc` stored both secrets in the clear in
    `process.command_args`, on every record of the run: the receiver's masking cannot tell that
    `hunter3` is a password once it is an argument of its own."""
    run = subprocess.run(
        [*SLUICE_RUN, "--endpoint", f"http://{receiver.endpoint}", "--service-name", "argv", "--",
         "sh", "-c", "echo started", "sh", "--password", "hunter3", "--token=abc", "--user", "bob"],
        cwd=tmp_path, capture_output=True, timeout=60, env=env_for(tmp_path))
    assert run.returncode == 0, run.stderr
    assert receiver.stop(signal.SIGTERM) == 0
    [record] = receiver.read("app")
    assert record["resource"]["process.command_args"] == [
        "sh", "-c", "echo started", "sh", "--password", "[REDACTED:kv_secret]",
        "--token=[REDACTED:kv_secret]", "--user", "bob"]
    assert "hunter3" not in json.dumps(record)


def _python_without_sluice() -> str | None:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and os.path.realpath(candidate) != os.path.realpath(sys.executable):
            probe = subprocess.run([candidate, "-c", "import sluice"], capture_output=True, timeout=30,
                                   env={"PATH": os.environ.get("PATH", "")})
            if probe.returncode != 0:
                return candidate
    return None


OTHER_PYTHON = _python_without_sluice()


@pytest.mark.skipif(OTHER_PYTHON is None, reason="no Python interpreter without sluice on this machine")
def test_an_interpreter_without_sluice_is_captured_and_sluice_run_says_why_it_is_not_instrumented(
    tmp_path: Path, receiver: ReceiverProcess,
) -> None:
    """Issue 11: `sluice run -- /other/python app.py` printed `AttributeError: module 'importlib'
    has no attribute 'machinery'`. Now: one plain explanation from sluice run, the program's own
    output untouched and captured, its exit code returned."""
    assert OTHER_PYTHON is not None
    (tmp_path / "app.py").write_text("print('hello from elsewhere')\nraise SystemExit(5)\n")
    run = subprocess.run(
        [*SLUICE_RUN, "--endpoint", f"http://{receiver.endpoint}", "--service-name", "other", "--",
         OTHER_PYTHON, "app.py"], cwd=tmp_path, capture_output=True, timeout=60, env=env_for(tmp_path))
    assert run.returncode == 5
    assert run.stdout == b"hello from elsewhere\n"
    message = run.stderr.decode()
    assert "AttributeError" not in message
    assert "cannot import sluice" in message
    assert "install sluice into that interpreter's environment" in message
    assert f"({OTHER_PYTHON} -m pip install sluice-otel)" in message
    assert message.startswith("sluice run: ")
    assert receiver.stop(signal.SIGTERM) == 0
    assert bodies(receiver, "app") == ["hello from elsewhere"]
    assert receiver.read("error") == []


@pytest.mark.skipif(OTHER_PYTHON is None, reason="no Python interpreter without sluice on this machine")
def test_the_bootstrap_alone_in_an_interpreter_without_sluice_says_so_in_one_line(tmp_path: Path) -> None:
    import sluice

    assert OTHER_PYTHON is not None
    bootstrap = Path(sluice.__file__).parent / "_bootstrap"
    run = subprocess.run([OTHER_PYTHON, "-c", "print('ran')"], capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(bootstrap)})
    assert run.returncode == 0
    assert run.stdout == "ran\n"
    assert run.stderr.startswith("sluice: not started: ")
    assert "cannot import sluice" in run.stderr
    assert run.stderr.count("\n") == 1


def test_a_program_that_cannot_be_started_exits_127_with_a_message(tmp_path: Path) -> None:
    run = subprocess.run([*SLUICE_RUN, "--", "no-such-program-xyz"], capture_output=True, text=True,
                         timeout=60, env=env_for(tmp_path))
    assert run.returncode == 127
    assert "cannot run 'no-such-program-xyz'" in run.stderr


def test_a_closed_reader_ends_the_program_with_sigpipe_as_without_sluice(tmp_path: Path) -> None:
    """`sluice run -- yes | head -1`: when the reader goes away, the program gets SIGPIPE."""
    run = subprocess.Popen([*SLUICE_RUN, "--endpoint", "http://127.0.0.1:9", "--", "yes"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           env=env_for(tmp_path, SLUICE_EXIT_TIMEOUT_S="1"))
    assert run.stdout is not None
    assert run.stdout.readline() == b"y\n"
    run.stdout.close()
    assert run.wait(60) == -signal.SIGPIPE
