"""Per-batch stages between decode and the sinks: masking, validation, routing.
Each is a `Callable[[Batch], Batch]`; the pipeline is a loop over them."""
