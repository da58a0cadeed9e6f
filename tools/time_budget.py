"""Fit a training time into the deadline of the call that runs it (tools/device_run.sh exports DEADLINE_AT, the
epoch second at which it stops the command).

    python -m tools.time_budget MINUTES KEEP_S   ->  prints MINUTES, or less so that KEEP_S seconds (the
                                                     evaluation after the training) still fit before DEADLINE_AT

Round 8's first call asked for 8 minutes of training inside a 575 s call and lost its evaluation to the deadline
(docs/results/runs/2026-12-03/occ-round8). Without DEADLINE_AT the minutes are printed unchanged; never less than
MIN_MINUTES (a run that cannot train at all is better told by its log than by a zero).
"""
import os
import sys
import time

MIN_MINUTES = 0.5


def fit_minutes(want, keep_s, deadline_at=None, now=None):
    """Minutes of training that leave ``keep_s`` seconds before ``deadline_at`` (epoch seconds; None: ``want``)."""
    if deadline_at is None:
        return float(want)
    now = time.time() if now is None else now
    left = (float(deadline_at) - now - float(keep_s)) / 60
    return max(MIN_MINUTES, min(float(want), left))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: python -m tools.time_budget MINUTES KEEP_S")
    try:
        want, keep = float(argv[0]), float(argv[1])
    except ValueError:
        sys.exit(f"tools.time_budget: MINUTES and KEEP_S must be numbers, got {argv}")
    at = os.environ.get("DEADLINE_AT") or None
    got = fit_minutes(want, keep, at)
    if got < want:
        print(f"[time_budget] {want:g} min of training would end past the call's deadline with {keep:g} s to "
              f"evaluate: {got:.2f} min", file=sys.stderr)
    print(f"{got:.2f}" if got != int(got) else f"{int(got)}")


if __name__ == "__main__":
    main()
