"""Reading stored logs back: the SQLite index (`store`), the `sluice.v1.LogQuery` gRPC service
(`service`), export formats (`export`) and the client the `sluice logs` command uses (`client`).
See docs/query.md."""
