"""Receiver assembly and everything around it: config root, workers, status, CLI."""
