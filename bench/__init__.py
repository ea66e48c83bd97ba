"""Benchmark of the export pipeline: ``python -m bench`` (see bench/README.md)."""
