"""Generated from proto/sluice/v1/query.proto by `make proto`; do not edit."""
