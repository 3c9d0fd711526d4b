"""Benchmarks across bundles: the label-efficiency benchmark (`cellzoo benchmark label-efficiency`)."""

from cellzoo.benchmarks.label_efficiency import KINDS, TASKS, run_benchmark

__all__ = ["KINDS", "TASKS", "run_benchmark"]
