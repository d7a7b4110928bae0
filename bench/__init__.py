"""Benchmarks: ingestion against a bare-Starlette ceiling, reads at a million events, pages under a
flood of products (see docs/operators.md)."""
