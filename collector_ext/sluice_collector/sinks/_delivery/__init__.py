"""What the remote sinks share: the bounded on-disk spool."""
