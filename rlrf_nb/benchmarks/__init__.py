"""Benchmarks that score policies on external evaluation suites."""
