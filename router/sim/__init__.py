"""Trace-driven simulation of the packing policies (docs/packing.md)."""
