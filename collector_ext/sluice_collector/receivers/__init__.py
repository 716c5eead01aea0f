"""Front doors: one module per transport. Each turns its requests into one ingest call and
the core's typed errors into its own status codes."""
