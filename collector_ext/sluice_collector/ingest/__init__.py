"""The transport-neutral ingest core: auth, admission and decoding, shared by every front door."""
