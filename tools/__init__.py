"""Command-line tools, run from the repository root as modules: ``python -m tools.<group>.<name>`` (tools/README.md)."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
