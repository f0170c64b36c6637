"""Shared helpers for vnfkit benchmarks."""
