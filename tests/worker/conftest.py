"""Fixtures for the worker tests; the harness lives in worker_harness.py."""

from worker_harness import start_worker, stubs

__all__ = ["start_worker", "stubs"]
