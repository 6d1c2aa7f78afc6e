"""Benchmarks (``python -m scripts.bench.<name>``) and their shared measurement discipline."""
