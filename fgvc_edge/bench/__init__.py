"""Benchmarks: params, MACs, latency and memory, next to the papers' efficiency tables."""
from fgvc_edge.bench.report import write_reports
from fgvc_edge.bench.suite import BenchSettings, default_targets, run_bench

__all__ = ["BenchSettings", "default_targets", "run_bench", "write_reports"]
