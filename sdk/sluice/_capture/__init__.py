"""`sluice run`'s output capture: any program's stdout and stderr as OTLP log records.

Three processes, one direction (docs/run.md has the user-facing rules):

    program ──stdout/stderr (pty or pipe)──► sluice run: pump ──terminal (byte for byte)
                                                 │ frames (non-blocking, drops counted)
                                                 ▼
                                     capture process: sink ──► LineAssembler ──► LogShipper ──► OTLP

- `run`        spawn the program, forward signals, exit as it did; start the other two pieces
- `pump`       the thread that reads the program's output, writes it on, forwards chunks
- `frames`     the pipe between pump and sink, and why it is a second process
- `sink`       the capture process's main loop
- `assembler`  chunks -> lines -> (skipping the child SDK's own lines) -> records
- `multiline`  which lines make one record (stack traces, continuation lines)
- `lines`      what one line says (JSON, logfmt, Python logging, level words, HTTP)
- `records`    a group of lines -> one shipper item (attributes, severity, correlation ids)
- `channel`    the private pipe from a Python child's SDK, so its logging is shipped once

Only the standard library and `sluice` itself are imported here: the SDK must stay importable
without the receiver's dependencies, and the SDK never imports the receiver's package.
"""
