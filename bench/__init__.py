"""Benchmarks: ingestion against a bare-Starlette ceiling, and reads at a million events (see README)."""
