"""Data sets and input pipelines."""
