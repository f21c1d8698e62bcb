"""Benchmarks (not part of the installed package): python benchmarks/bench_vs_trl.py --help."""
