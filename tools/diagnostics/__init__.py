"""Diagnostics: oracles, checks and measurements behind the design choices (docs/results)."""
