"""Tests that run real servers and processes on loopback (local EdgeLB, CLI subprocesses)."""
