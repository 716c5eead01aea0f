"""The `sluice` command. The only place in the receiver that exits the process.

    sluice receiver run [--config FILE] [--listen HOST:PORT] [--telemetry-listen HOST:PORT] [--workers N]
    sluice receiver check-config FILE | --config FILE
    sluice receiver default-config
    sluice audit verify DIR [--key-env VAR | --key-file FILE]
    sluice logs query|tail|stats|export [--endpoint HOST:PORT] [--api-key KEY] [filters...]
    sluice index rebuild [--config FILE]
    sluice run [--service-name NAME] [--endpoint URL] [--resource-attribute K=V]... -- COMMAND [ARGS...]
    sluice version
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from sluice_collector import DEFAULT_CONFIG_RESOURCE, __version__
from sluice_collector.errors import ConfigError, SluiceReceiverError
from sluice_collector.extras import MissingExtra, require_receiver
from sluice_collector.receivers.config import endpoint_problem

# Only the standard library and sluice_collector's pure modules above: `sluice --help`,
# `sluice version` and `sluice run` work with the SDK alone (no `receiver` extra installed);
# every other command imports what it needs after `require_receiver` (see extras.py).
from sluice_collector.redact import redact_text  # pure: the standard library only

if TYPE_CHECKING:
    from sluice_collector.service.config import ReceiverConfig

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3

log = logging.getLogger("sluice.receiver")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="sluice: OpenTelemetry-native logging kit — an OTLP receiver that masks, "
        "categorises and stores telemetry.",
    )
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    receiver = commands.add_parser("receiver", help="run or check the OTLP receiver")
    receiver_commands = receiver.add_subparsers(dest="receiver_command", metavar="SUBCOMMAND")
    run = receiver_commands.add_parser(
        "run",
        help="run the receiver until SIGTERM/SIGINT",
        description="Run the OTLP receiver. Without --config it uses the embedded default "
        "(OTLP/gRPC on 127.0.0.1:4317, OTLP/HTTP on 127.0.0.1:4318, files under ./logs, "
        "masking on, syslog off; see "
        "`sluice receiver default-config`). SIGTERM or SIGINT stops listening, drains every "
        "in-flight batch, flushes the sinks and exits 0.",
    )
    run.add_argument("--config", "-c", metavar="FILE", help="YAML config file")
    run.add_argument(
        "--listen", metavar="HOST:PORT", type=_endpoint,
        help="override receivers.otlp.protocols.grpc.endpoint (port 0: any free; '' turns "
        "OTLP/gRPC off)",
    )
    run.add_argument(
        "--http-listen", metavar="HOST:PORT", type=_endpoint,
        help="override receivers.otlp.protocols.http.endpoint (port 0: any free; '' turns "
        "OTLP/HTTP off)",
    )
    run.add_argument(
        "--telemetry-listen", metavar="HOST:PORT", type=_endpoint,
        help="override `telemetry.listen` (/metrics and /healthz); '' turns it off",
    )
    run.add_argument(
        "--workers", type=_positive_int, default=1, metavar="N",
        help="run N receiver processes on one port (SO_REUSEPORT) to use N cores; they share "
        "the category files under a lock, and worker i serves telemetry on its port + i "
        "(default 1)",
    )
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    # Set by the supervisor: where the workers hand requests to each other, and how many.
    run.add_argument("--peer-dir", type=Path, help=argparse.SUPPRESS)
    run.add_argument("--worker-count", type=int, default=0, help=argparse.SUPPRESS)
    run.add_argument(
        "--log-level", default=os.environ.get("SLUICE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of the receiver's own log on stderr (default INFO, or $SLUICE_LOG_LEVEL)",
    )
    check = receiver_commands.add_parser(
        "check-config",
        help="validate a config file and exit non-zero on any problem",
        description="Validate FILE. Prints every problem with its key path, the value found and "
        "what would be accepted, and exits 3; exits 0 and prints a summary when it is valid.",
    )
    check.add_argument("file", metavar="FILE", nargs="?")
    check.add_argument("-c", "--config", dest="config_file", metavar="FILE",
                       help="the same FILE, given as `receiver run` takes it")
    receiver_commands.add_parser(
        "default-config", help="print the embedded default config (a starting point for your own)"
    )
    audit = commands.add_parser("audit", help="check the tamper-evident audit files")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    verify = audit_commands.add_parser(
        "verify",
        help="verify the hash chain of every audit file set under DIR",
        description="Walk every audit file set under DIR (the receiver's files.directory, "
        "tenants/<tenant>/ directories included; sets are found by their head files, by the path "
        "templates the receiver recorded in DIR/.audit-manifest or given with --config, and by "
        "name): rotated files oldest first (.N and .N.gz; a rotated file present both ways must "
        "be the same bytes twice), then the active file, checking that each record's audit.hash "
        "matches its content, its audit.prev_hash the record before it (the first one: the "
        "set's own genesis), and that the set still holds the newest record its head file "
        "names. Exits 0 and prints the record count when every chain is intact; prints the "
        "first broken link of each set (file, line, what is wrong) and exits 1 when a record "
        "was modified, deleted, reordered, inserted or truncated, the newest records or files "
        "were removed, a set was moved or swapped, or the receiver recorded a gap. Use the key "
        "the receiver used (files.audit_chain.key_env / key_file) when the chain is keyed.",
    )
    verify.add_argument("directory", metavar="DIR", help="the receiver's files.directory")
    key = verify.add_mutually_exclusive_group()
    key.add_argument("--key-env", metavar="VAR", help="read the HMAC chain key from $VAR")
    key.add_argument("--key-file", metavar="FILE", help="read the HMAC chain key from FILE")
    verify.add_argument("--config", metavar="FILE", help="the receiver's config: its "
                        "categories.audit.path and files.fallback_path name audit sets too")
    from sluice_collector.query.arguments import add_parser as add_logs_parser

    add_logs_parser(commands)
    index = commands.add_parser("index", help="maintain the query index")
    index_commands = index.add_subparsers(dest="index_command", metavar="SUBCOMMAND")
    rebuild = index_commands.add_parser(
        "rebuild",
        help="rebuild the query index from the stored files",
        description="Rebuild <files.directory>/.index/records.db from every JSON-lines file under "
        "files.directory (active, rotated and .gz), honouring query.index_categories. Run it with "
        "the receiver stopped: records written meanwhile would be missing from the new index.",
    )
    rebuild.add_argument("--config", "-c", metavar="FILE", help="YAML config file (default: embedded)")
    app = commands.add_parser(
        "run",
        help="run any program, shipping its output as log records (Python ones instrumented too)",
        description="Run COMMAND. Its stdout and stderr still reach the terminal byte for byte, "
        "and every line is also shipped as an OTLP log record through the SDK's exporter (same "
        "endpoint, headers and spill-to-disk rules as sluice.init(); SLUICE_*/OTEL_* variables "
        "apply): JSON and logfmt lines, Python's logging format and level words are understood, "
        "stack traces become one record, ANSI colours are stripped. A Python program also gets "
        "sluice.init() before its own code (auto-instrumentation), and its logging records are "
        "shipped once, by the SDK. Signals are passed on; sluice run exits as the program did. "
        "See docs/run.md.",
    )
    app.add_argument("--service-name", metavar="NAME",
                     help="service.name of the records (sets OTEL_SERVICE_NAME for the program too)")
    app.add_argument("--endpoint", metavar="URL",
                     help="the receiver (default http://localhost:4317; "
                     "sets OTEL_EXPORTER_OTLP_ENDPOINT too)")
    app.add_argument(
        "--resource-attribute", metavar="KEY=VALUE", action="append", default=[], type=_key_value,
        help="a resource attribute of every record, e.g. user.id=u-7 (repeatable; also added to "
        "OTEL_RESOURCE_ATTRIBUTES for the program); user.id, enduser.id, tenant.id and request.id "
        "are set on each record too, as sluice.context() does",
    )
    app.add_argument("--stdout-severity", metavar="LEVEL", default="info", type=_level,
                     help="severity of stdout lines that name none (default info)")
    app.add_argument("--stderr-severity", metavar="LEVEL", default="error", type=_level,
                     help="severity of stderr lines that name none (default error)")
    app.add_argument("--no-capture", action="store_true",
                     help="do not capture output (only start the SDK in a Python program)")
    app.add_argument("--no-instrument", action="store_true",
                     help="do not start the SDK inside a Python program (capture output only)")
    app.add_argument("program", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    commands.add_parser("version", help="print the version")
    return parser


def _endpoint(text: str) -> str:
    """A listen address checked by the same rule as the config file's ('' = off)."""
    problem = endpoint_problem(text) if text else ""
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"got {text!r}; expected KEY=VALUE such as user.id=u-7")
    return key.strip(), value


def _level(text: str) -> int:
    from sluice._capture.run import parse_level

    try:
        return parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a whole number ≥ 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Whoever read our output went away (`sluice logs query | head -1`): stop quietly, as
        # cat does, with the exit status a SIGPIPE gives; no traceback about it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run_program(args)
    if args.command in ("receiver", "audit", "logs", "index") and not (
            args.command == "receiver" and args.receiver_command in (None, "default-config")):
        try:
            require_receiver(f"{args.command} {getattr(args, f'{args.command}_command', '') or ''}".strip())
        except MissingExtra as exc:
            print(f"sluice: {exc}", file=sys.stderr)
            return EXIT_RUNTIME
    if args.command == "audit":
        if args.audit_command == "verify":
            return _audit_verify(args)
        parser.parse_args(["audit", "--help"])
    if args.command == "logs":
        from sluice_collector.query.client import run as run_logs

        if not args.logs_command:
            parser.parse_args(["logs", "--help"])
        return run_logs(args)
    if args.command == "index":
        if args.index_command == "rebuild":
            return _index_rebuild(args)
        parser.parse_args(["index", "--help"])
    if args.command == "version":
        print(f"sluice {__version__}")
        return EXIT_OK
    if args.command == "receiver":
        if args.receiver_command == "run":
            return _run(args)
        if args.receiver_command == "check-config":
            if args.file and args.config_file and args.file != args.config_file:
                parser.error("check-config: give FILE once (as FILE or as --config FILE)")
            if not (args.file or args.config_file):
                parser.error("check-config: which file? give FILE (or --config FILE)")
            return _check_config(args.file or args.config_file)
        if args.receiver_command == "default-config":
            sys.stdout.write(
                resources.files("sluice_collector").joinpath(DEFAULT_CONFIG_RESOURCE).read_text()
            )
            return EXIT_OK
        parser.parse_args(["receiver", "--help"])
    parser.print_help()
    return EXIT_USAGE


def _run_program(args: argparse.Namespace) -> int:
    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    if not program:
        print("sluice run: give the program to run, e.g. `sluice run -- python app.py`",
              file=sys.stderr)
        return EXIT_USAGE
    from sluice._capture import run as capture
    from sluice.errors import ConfigError as SdkConfigError

    def say(text: str) -> None:
        print(f"sluice run: {text}", file=sys.stderr, flush=True)

    capture.quiet_internal_log(lambda line: print(line, file=sys.stderr, flush=True))
    options = capture.RunOptions(
        command=program, service_name=args.service_name, endpoint=args.endpoint,
        resource_attributes=dict(args.resource_attribute), stdout_level=args.stdout_severity,
        stderr_level=args.stderr_severity, capture=not args.no_capture, instrument=not args.no_instrument,
    )
    try:
        result = capture.run(options, notice=lambda text: say(capture.not_instrumented_message(text)))
    except SdkConfigError as exc:
        say(str(exc))
        return EXIT_USAGE
    except capture.RunError as exc:
        say(str(exc))
        return exc.exit_code
    if result.lines_dropped or result.records_dropped:
        say(f"{result.lines_dropped} lines and {result.records_dropped} records were not shipped "
            "(output faster than sluice could send it, or the receiver refused it)")
    if result.signal is not None:
        return capture.die_like(result.signal)
    return result.exit_code


def _audit_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sluice_collector.sinks.files.auditchain import ChainHasher, ChainKeyError, load_key
    from sluice_collector.sinks.files.auditverify import verify_directory

    directory = Path(args.directory)
    if not directory.is_dir():
        print(f"sluice audit verify: {directory}: no such directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        key = load_key(env=args.key_env, file=args.key_file)
        templates = _audit_templates(args.config) if args.config else []
    except (ChainKeyError, ValueError) as exc:
        print(f"sluice audit verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from sluice_collector.progress import Progress

    with Progress("verifying") as progress:
        reports = verify_directory(directory, ChainHasher(key), templates, progress=progress.advance)
    if not reports:
        # An empty result is suspicious in itself: the files may have been removed.
        print(f"sluice audit verify: no audit files under {directory}", file=sys.stderr)
        return EXIT_RUNTIME
    broken = 0
    for report in reports:
        if report.broken is not None:
            broken += 1
            print(f"BROKEN {report.broken} (set {report.rel})", file=sys.stderr)
            continue
        notes = []
        if report.torn:
            notes.append(f"{report.torn} torn by a crash (acknowledged)")
        if report.torn_unacknowledged:
            notes.append(f"{report.torn_unacknowledged} torn by a crash after the head (the "
                         "receiver acknowledges them with its next write)")
        if report.legacy:
            notes.append("legacy chain: not bound to its set" + (
                "" if report.head_file else ", no head file: removing its newest records "
                "is not detectable"))
        extra = "".join(f", {note}" for note in notes)
        print(f"ok {report.active}: {report.records} records in {len(report.files)} file(s)"
              f"{extra}; head {report.head}")
    total = sum(r.records for r in reports if r.broken is None)
    if broken:
        print(f"sluice audit verify: {broken} of {len(reports)} audit file set(s) broken",
              file=sys.stderr)
        return EXIT_RUNTIME
    print(f"intact: {total} audit records in {len(reports)} file set(s)"
          f"{' (keyed)' if key else ''}")
    return EXIT_OK


def _audit_templates(config_file: str) -> list[str]:
    """`categories.audit.path` and `files.fallback_path` of a receiver config (only those:
    verifying needs no tokens or keys the config may reference)."""
    import yaml

    try:
        with open(config_file, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"--config {config_file}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--config {config_file}: not a mapping")
    templates = ["{category}.log"]
    audit = (data.get("categories") or {}).get("audit") or {}
    files = data.get("files") or {}
    if isinstance(audit, dict) and isinstance(audit.get("path"), str):
        templates.append(audit["path"])
    if isinstance(files, dict) and isinstance(files.get("fallback_path"), str) and (
            "{category}" in files["fallback_path"]):
        templates.append(files["fallback_path"])
    return templates


def _index_rebuild(args: argparse.Namespace) -> int:
    from sluice_collector.query.store import rebuild
    from sluice_collector.service.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    directory = config.files.directory
    if not directory.is_dir():
        print(f"sluice index rebuild: {directory}: no such directory", file=sys.stderr)
        return EXIT_USAGE
    from sluice_collector.progress import Progress, uncompressed_size
    from sluice_collector.query.store import stored_files
    from sluice_collector.service.dirlock import DirectoryInUse, DirectoryLock

    # Under a running receiver the rebuilt index would lose every record stored after it.
    claim = DirectoryLock(directory)
    try:
        claim.acquire("a running receiver")
    except DirectoryInUse as exc:
        print(f"sluice index rebuild: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    total = sum(uncompressed_size(path) for path, _ in stored_files(directory))
    try:
        with Progress("indexing", total=total) as progress:
            count = rebuild(directory, config.query.index_categories, progress=progress.advance)
    except OSError as exc:
        print(f"sluice index rebuild: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        claim.release()
    print(f"indexed {count} records from {directory}")
    return EXIT_OK


class RedactingFormatter(logging.Formatter):
    """The receiver's log lines (tracebacks included) with URL passwords replaced: a line may
    quote a configured endpoint, and a log is read by more people than the config is."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def _check_config(path: str) -> int:
    from sluice_collector.service.config import load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    lines = _summary(path, config)
    print("\n".join(redact_text(line) for line in lines))
    return EXIT_OK


def _summary(path: str, config: ReceiverConfig) -> list[str]:
    """What `check-config` prints for a valid config (shown with URL passwords replaced)."""
    out = [f"{path}: OK"]
    for name, proto in (("grpc", config.receivers.grpc), ("http", config.receivers.http)):
        if proto.endpoint:
            out.append(f"  otlp {name}: {proto.endpoint}{' (TLS)' if proto.tls else ''}")
    out.append(f"  files: {config.files.directory} ({config.files.format})"
               f"{'' if config.files.enabled else ' — disabled'}")
    for rule in config.routing.categories:
        policy = config.files.categories.get(rule.name) or config.files.default_policy(rule.name)
        keep = "forever" if policy.retention_days is None else f"{policy.retention_days} days"
        out.append(f"  category {rule.name}: {policy.path}, keep {keep}, {len(rule.match)} rule(s)")
    access = config.access_from_spans
    out.append(f"  access records from HTTP server spans: "
               f"{f'on, into {access.category}' if access.enabled else 'off'}")
    out.append(f"  masking: {'on' if config.masking.enabled else 'off'}")
    targets = ", ".join(t.url for t in config.syslog.targets)
    out.append(f"  syslog: on, {targets}" if config.syslog.enabled else "  syslog: off")
    for target in config.forward.targets:
        signals = ", ".join(s.value for s in target.signals)
        out.append(f"  forward {target.name}: {target.endpoint} ({target.protocol}; {signals})")
    if config.query.enabled:
        roles = ", ".join(f"{k.name} ({k.role})" for k in config.query.api_keys)
        indexed = ", ".join(config.query.index_categories) or "all log and span categories"
        out.append(f"  query: on, keys {roles}; index: {indexed}")
    else:
        out.append("  query: off")
    return out


def _run(args: argparse.Namespace) -> int:
    from sluice_collector.service.config import load_config, with_endpoints

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    try:
        config: ReceiverConfig = load_config(args.config)
        config = with_endpoints(config, grpc=args.listen, http=args.http_listen,
                                telemetry=args.telemetry_listen)
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.workers > 1 and args.worker_index is None:
        from sluice_collector.service.workers import supervise

        return supervise(args, config)

    from sluice_collector.service.receiver import Receiver

    try:
        peers = (args.peer_dir, args.worker_count) if args.peer_dir and args.worker_count > 1 \
            else None
        receiver = Receiver(config, worker_index=args.worker_index, peers=peers)
        receiver.start()
    except SluiceReceiverError as exc:
        print(f"sluice: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_RUNTIME
    except OSError as exc:
        print(f"sluice: cannot start: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_RUNTIME

    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # One parseable line that tests, scripts and people can wait for.
    print(f"sluice receiver ready: {receiver.describe()}, files under "
          f"{config.files.directory.resolve()} (config: {config.source})",
          file=sys.stderr, flush=True)
    if receiver.viewer_url:
        print(f"sluice viewer on {receiver.viewer_url} (sign in with a query.api_keys key)",
              file=sys.stderr, flush=True)
    while not stop_requested.wait(0.5):
        pass
    log.info("stopping: draining in-flight batches and flushing sinks")
    clean = receiver.stop()
    log.info("stopped%s", "" if clean else " (some sinks did not flush in time)")
    return EXIT_OK if clean else EXIT_RUNTIME


if __name__ == "__main__":
    raise SystemExit(main())
