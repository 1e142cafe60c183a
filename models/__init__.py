"""Offline evaluation: the split, the metrics, the reference models and the `evaluate` run."""
