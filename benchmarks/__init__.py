"""Reproducible comparisons against peers; `python -m benchmarks.run` writes BENCHMARKS.md."""
