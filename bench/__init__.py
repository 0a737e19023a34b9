"""Reproducible benchmarks. Each module measures its baseline in the same run."""
