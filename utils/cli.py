"""What option definitions need, below ``options.py``: the boolean type and the range tests.

Modules that own options (``options.OPTION_MODULES``) import these from here, never from ``options`` (which imports
those modules to build its parser).
"""
import argparse


def str2bool(v):
    """argparse type of a true/false option (1/0, yes/no, on/off are accepted too)."""
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "on"):
        return True
    if s in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {v!r}")


# Ranges (a module's OPTION_RANGES): option -> (test of one value, what it must be).
def at_least(lo):
    return (lambda v: v >= lo), f"at least {lo}"


def above(lo):
    return (lambda v: v > lo), f"above {lo}"


def within(lo, hi):
    return (lambda v: lo <= v <= hi), f"between {lo} and {hi}"
