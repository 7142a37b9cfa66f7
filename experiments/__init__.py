"""Experiment grids and their report: the paper's claims measured (docs/results.md)."""
