"""Evaluation: data sets, methods, metrics, the runner and its report."""
