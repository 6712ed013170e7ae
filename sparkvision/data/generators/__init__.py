"""Synthetic data sets written in the public on-disk formats."""
