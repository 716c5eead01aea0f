"""The file sink: rotated, compressed, retention-managed JSON-lines files per category,
the record of truth (with the audit hash chain)."""
