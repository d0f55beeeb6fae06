"""Benchmarks of dklb, side by side with the Go dklb's algorithm: ``./dev bench`` (``python -m bench``)."""
