"""`sluice run -- COMMAND`: start any program, pass its output through, ship it as log records.

The process shape, and why:

- The child is started with `posix_spawn` in sluice's own process group and session, with
  stdin inherited. Its stdout and stderr are each a pty when sluice's own is a terminal (so the
  program still sees a terminal: line buffering, colours, prompts), else a pipe — as it would see
  without sluice. The ptys do no output processing, so the bytes reach the terminal unchanged.
- Signals: sluice blocks the ones it forwards (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1,
  SIGUSR2, SIGWINCH) before it starts any thread and takes them with `sigtimedwait`, so it sees
  who sent each. One sent by a process (`kill`, a supervisor, a test) is passed to the child. One
  the terminal driver sent (Ctrl-C, Ctrl-\\, hang-up, resize) reached the child already, because
  it is in the same foreground process group — forwarding it would deliver it twice, and many
  programs treat a second Ctrl-C as "quit now". A resize is copied onto the ptys. Ctrl-Z stops
  both, `fg` continues both, as for any pipeline.
- Two processes of sluice's own: this one passes the output through (`pump`) and forwards it,
  chunk by chunk, to a capture process (`sink`) that parses, joins and ships it — so the program's
  bytes never wait for Python's GIL (see `frames` for why, and for the drop rules).
- When the child exits: read its output to the end (or until it has been quiet for a moment,
  when a background grandchild keeps the pipe open), let the capture process make the last
  records and flush them — all within `exit_timeout_s`, the SDK's exit deadline; what the
  receiver did not take by then is spilled to disk and delivered by the next process of the same
  service. Then exit as the child did: its exit code, or death by the same signal (`die_like`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sluice import _health
from sluice._capture.argv import redact_command
from sluice._capture.channel import ENV_FD
from sluice._capture.frames import CONFIG, FrameWriter, pack
from sluice._capture.lines import ERROR, INFO, LEVEL_NAMES, level_from_word
from sluice._capture.pump import OutputStream, Pump, widen_pipe
from sluice._config import Settings, resolve

if TYPE_CHECKING:
    from sluice.masking import Masker

__all__ = [
    "RunError",
    "RunOptions",
    "RunResult",
    "child_environment",
    "die_like",
    "not_instrumented_message",
    "parse_level",
    "quiet_internal_log",
    "run",
    "settings_for",
]

FORWARDED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                       signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH})
_SI_KERNEL = 0x80
_SDK_VERSION = "0.1.0.dev0"


class RunError(Exception):
    """The program could not be started; `exit_code` is what a shell would have returned."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class RunOptions:
    command: Sequence[str]
    service_name: str | None = None
    endpoint: str | None = None
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    stdout_level: int = INFO
    stderr_level: int = ERROR
    capture: bool = True
    instrument: bool = True


@dataclass
class RunResult:
    """How the child ended, and what the capture did."""

    exit_code: int
    signal: int | None = None
    records: int = 0
    lines_dropped: int = 0
    records_dropped: int = 0
    lines_skipped: int = 0
    notices: list[str] = field(default_factory=list)


def parse_level(text: str) -> int:
    """A severity name given on the command line (`--stderr-severity warn`) -> level number."""
    level = level_from_word(text.strip())
    if not level:
        names = ", ".join(n.lower() for n in LEVEL_NAMES.values())
        raise ValueError(f"got {text!r}; expected one of {names}")
    return level


def not_instrumented_message(reason: str) -> str:
    """What `sluice run` says when a Python child cannot import sluice (issue: `sluice run --
    /other/python app.py`): plainly what is wrong and the two ways to fix it.

    The install command is one the user can paste: it names the child's own interpreter (the
    bootstrap starts `reason` with its `sys.executable`, then ` (Python `) and the distribution
    `sluice-otel` — `pip install sluice` would fetch an unrelated PyPI project."""
    interpreter, found, _ = reason.partition(" (Python ")
    python = shlex.quote(interpreter) if found and interpreter else "python"
    return (f"{reason}. That interpreter does not have sluice installed, so the program runs without "
            "the SDK: no spans, metrics or trace-correlated log records; its output is still captured "
            "line by line. To instrument it, install sluice into that interpreter's environment "
            f"({python} -m pip install sluice-otel), or run the program with {sys.executable}, the "
            "interpreter sluice is installed for.")


def _encode_attributes(attrs: Mapping[str, str]) -> str:
    return ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in attrs.items())


def child_environment(env: Mapping[str, str], options: RunOptions, channel_fd: int | None) -> dict[str, str]:
    """The child's environment: the Python bootstrap on PYTHONPATH (unless `instrument` is off),
    the standard OTEL_* variables (so an OpenTelemetry SDK in any language — and sluice's, which
    reads them too — names the same service, endpoint and resource attributes), the SLUICE_*
    ones too where already set (they would win over ours otherwise), and the channel's fd."""
    out = dict(env)
    if options.instrument:
        import sluice

        bootstrap = os.path.join(os.path.dirname(os.path.abspath(sluice.__file__)), "_bootstrap")
        out["PYTHONPATH"] = os.pathsep.join(filter(None, [bootstrap, out.get("PYTHONPATH", "")]))
    if options.service_name:
        out["OTEL_SERVICE_NAME"] = options.service_name
        if "SLUICE_SERVICE_NAME" in out:
            out["SLUICE_SERVICE_NAME"] = options.service_name
    if options.endpoint:
        out["OTEL_EXPORTER_OTLP_ENDPOINT"] = options.endpoint
        if "SLUICE_ENDPOINT" in out:
            out["SLUICE_ENDPOINT"] = options.endpoint
    if options.resource_attributes:
        extra = _encode_attributes(options.resource_attributes)
        for name in ("OTEL_RESOURCE_ATTRIBUTES", "SLUICE_RESOURCE_ATTRIBUTES"):
            if name == "OTEL_RESOURCE_ATTRIBUTES" or name in out:
                out[name] = ",".join(filter(None, [out.get(name, ""), extra]))
    out.pop(ENV_FD, None)
    if channel_fd is not None:
        out[ENV_FD] = str(channel_fd)
    return out


def settings_for(
    service_name: str | None, endpoint: str | None, resource_attributes: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> Settings:
    """The SDK settings of a run: SLUICE_*/OTEL_* variables, then the command line on top
    (its resource attributes added to the variables' rather than replacing them)."""
    env = os.environ if env is None else env
    base = resolve({}, env)
    arguments: dict[str, Any] = {"resource_attributes": {**base.resource_attributes, **resource_attributes}}
    if service_name:
        arguments["service_name"] = service_name
    if endpoint:
        arguments["endpoint"] = endpoint
    return resolve(arguments, env)


def _masker() -> Masker:
    from sluice.masking import Masker  # here: ~0.4 s (import, compile) a run without scrub skips

    return Masker()


def _resource(settings: Settings, command: Sequence[str], executable: str | None, pid: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "service.name": settings.service_name,
        "deployment.environment": settings.environment,
        "deployment.environment.name": settings.environment,
        "host.name": socket.gethostname(),
        "host.arch": platform.machine(),
        "os.type": sys.platform,
        "telemetry.distro.name": "sluice",
        "telemetry.distro.version": _SDK_VERSION,
    }
    if settings.service_version:
        attrs["service.version"] = settings.service_version
    attrs.update(settings.resource_attributes)
    attrs["service.name"] = settings.service_name
    # Facts about the process are not the user's to override.
    attrs["process.pid"] = pid
    attrs["process.parent_pid"] = os.getpid()
    # Secrets given as flags never leave the machine; with `scrub` on, the masking engine also
    # runs here (else the receiver's masking sees every argument, without this process paying
    # for compiling the engine).
    attrs["process.command_args"] = redact_command(command, _masker().mask if settings.scrub else None)
    attrs["process.executable.name"] = os.path.basename(executable or command[0])
    if executable:
        attrs["process.executable.path"] = executable
    return attrs


# -- terminals ---------------------------------------------------------------------------------


def _copy_window_size(source_fd: int, target_fd: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(source_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target_fd, termios.TIOCSWINSZ, size)


def _open_stream(name: str, fd: int) -> tuple[OutputStream, int]:
    """(the stream sluice reads, the fd the child writes): a raw-output pty for a terminal."""
    out_fd: int | None = fd
    try:
        os.fstat(fd)
    except OSError:
        out_fd = None
    if out_fd is not None and os.isatty(fd):
        master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST  # no "\n" -> "\r\n": the real terminal does that, once
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        _copy_window_size(fd, slave)
        return OutputStream(name, master, out_fd, is_pty=True), slave
    read_end, write_end = os.pipe()
    widen_pipe(write_end)
    return OutputStream(name, read_end, out_fd), write_end


# -- exit -------------------------------------------------------------------------------------


def die_like(signum: int) -> int:
    """End this process by `signum`, as the child ended, so a shell sees the same status
    (`$?` = 128+n, and bash's special handling of SIGINT). No core file of sluice itself."""
    with contextlib.suppress(Exception):
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    with contextlib.suppress(Exception):
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        os.kill(os.getpid(), signum)
        time.sleep(1.0)
    return 128 + signum  # a signal whose default is not to terminate (SIGWINCH...)


def _status(wait_status: int) -> tuple[int, int | None]:
    if os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
        return 128 + signum, signum
    return os.waitstatus_to_exitcode(wait_status), None


# -- run ----------------------------------------------------------------------------------------


def run(options: RunOptions, *, notice: Callable[[str], None] | None = None) -> RunResult:
    """Run the program to its end; raises `RunError` when it cannot be started and `ConfigError`
    for a bad option or variable (before anything starts)."""
    if not options.command:
        raise RunError("give the program to run, e.g. `sluice run -- python app.py`", 2)
    env = os.environ
    settings = settings_for(options.service_name, options.endpoint, options.resource_attributes, env)
    disabled = env.get("SLUICE_DISABLED", "").strip().lower() in ("1", "true", "yes")
    capture = options.capture and not disabled and settings.exporter == "otlp"
    executable = shutil.which(options.command[0], path=env.get("PATH"))

    original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED | {signal.SIGCHLD})
    try:
        return _run(options, settings, capture, executable, original_mask, notice)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, original_mask)


def _run(
    options: RunOptions, settings: Settings, capture: bool, executable: str | None,
    original_mask: set[int | signal.Signals], notice: Callable[[str], None] | None,
) -> RunResult:
    streams: list[OutputStream] = []
    child_fds: list[int] = []
    channel_r = channel_w = None
    sink: subprocess.Popen[bytes] | None = None
    writer: FrameWriter | None = None
    notices: list[str] = []
    if capture:
        for name, fd in (("stdout", 1), ("stderr", 2)):
            stream, child_fd = _open_stream(name, fd)
            streams.append(stream)
            child_fds.append(child_fd)
        if options.instrument:
            channel_r, channel_w = os.pipe()
            os.set_inheritable(channel_w, True)
        sink, writer = _start_sink()
    file_actions = [(os.POSIX_SPAWN_DUP2, child_fd, target)
                    for child_fd, target in zip(child_fds, (1, 2), strict=False)]
    env = child_environment(os.environ, options, channel_w)
    try:
        pid = os.posix_spawnp(
            options.command[0], list(options.command), env, file_actions=file_actions,
            setsigmask=original_mask, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except OSError as exc:
        _close_all([s.read_fd for s in streams] + child_fds + [channel_r, channel_w])
        if writer is not None and sink is not None:
            writer.close(b"{}", time.monotonic() + 1)
            _sink_counts(sink, 5.0)
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        raise RunError(f"cannot run {options.command[0]!r}: {exc.strerror or exc}", code) from exc
    _close_all([*child_fds, channel_w])
    if writer is None or sink is None:
        code, signum = _status(_wait(pid, streams))
        return RunResult(code, signum)

    config = {
        "service_name": options.service_name, "endpoint": options.endpoint,
        "resource_attributes": dict(options.resource_attributes),
        "resource": _resource(settings, options.command, executable, pid),
        "stdout_level": options.stdout_level, "stderr_level": options.stderr_level,
    }
    # The pipe is empty and wide: the config frame goes in at once, before any output.
    os.set_blocking(writer.fd, True)
    os.write(writer.fd, pack(CONFIG, 0, 0, json.dumps(config).encode()))
    os.set_blocking(writer.fd, False)

    def on_notice(text: str) -> None:
        if text not in notices:
            notices.append(text)
            if notice is not None:
                notice(text)

    pump = Pump(streams, writer, channel_fd=channel_r, on_notice=on_notice)
    pump.start()
    code, signum = _status(_wait(pid, streams))
    result = RunResult(code, signum, notices=notices)
    deadline = time.monotonic() + settings.exit_timeout_s
    pump.child_exited(deadline)
    pump.join(deadline - time.monotonic())
    writer.close(json.dumps({"timeout_s": max(0.1, deadline - time.monotonic())}).encode(), deadline)
    counts = _sink_counts(sink, max(0.0, deadline - time.monotonic()) + 2.0)
    result.records = counts.get("records", 0)
    result.lines_dropped = counts.get("lines_dropped", 0) + writer.lines_dropped
    result.lines_skipped = counts.get("lines_skipped", 0)
    result.records_dropped = counts.get("records_dropped", 0)
    return result


def _start_sink() -> tuple[subprocess.Popen[bytes], FrameWriter]:
    """The capture process (`sink`), fed through a wide non-blocking pipe. Started while the
    forwarded signals are blocked, which it inherits: only its input ending stops it."""
    read_end, write_end = os.pipe()
    widen_pipe(write_end, 16 * 1024 * 1024)
    import sluice

    bootstrap = os.path.join(os.path.dirname(os.path.abspath(sluice.__file__)), "_bootstrap")
    env = dict(os.environ)
    env.pop(ENV_FD, None)
    if env.get("PYTHONPATH"):  # a nested `sluice run`: the sink itself is no program to instrument
        env["PYTHONPATH"] = os.pathsep.join(p for p in env["PYTHONPATH"].split(os.pathsep) if p != bootstrap)
    try:
        sink = subprocess.Popen([sys.executable, "-m", "sluice._capture.sink"], stdin=read_end,
                                stdout=subprocess.PIPE, env=env, process_group=0)
    finally:
        os.close(read_end)
    return sink, FrameWriter(write_end)


def _sink_counts(sink: subprocess.Popen[bytes], timeout_s: float) -> dict[str, int]:
    try:
        out, _ = sink.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        sink.kill()
        sink.communicate()
        _health.report_once("capture_sink", "the capture process did not finish in time")
        return {}
    try:
        counts = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return {k: int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}


def _close_all(fds: Sequence[int | None]) -> None:
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _wait(pid: int, streams: list[OutputStream]) -> int:
    """Forward signals until the child exits; its wait status."""
    wanted = FORWARDED | {signal.SIGCHLD}
    ptys = [s for s in streams if s.is_pty and s.out_fd is not None]
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if done:
            return status
        info = signal.sigtimedwait(wanted, 0.5)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        signum = info.si_signo
        if signum == signal.SIGWINCH:
            for stream in ptys:
                assert stream.out_fd is not None
                _copy_window_size(stream.out_fd, stream.read_fd)
        if info.si_code == _SI_KERNEL:
            continue  # from the terminal: the child, in our process group, has it already
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def quiet_internal_log(write: Callable[[str], None]) -> None:
    """In the `sluice run` process, SDK health messages become one line each on stderr, without
    the traceback (the program's output is what the terminal is for)."""

    class OneLine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            with contextlib.suppress(Exception):
                write(f"sluice run: {record.getMessage().removeprefix('sluice: ')}")

    internal = _health.internal_logger
    internal.handlers[:] = [OneLine()]
    internal.propagate = False

