"""Benchmark plans (grids and target bars) and kept reports, installed with the package."""
