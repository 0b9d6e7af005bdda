"""Generators for the parts of ``specs/`` that are derived from ``protocol/``.

Run from the repository root: ``python -m specs.tools.make_diagrams``, ``python -m
specs.tools.make_tables``, ``python -m specs.tools.make_vectors``. Each is deterministic; the
tests in ``tests/protocol/`` regenerate the output in memory and fail when the committed copy is
stale.
"""
