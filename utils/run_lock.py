"""One live run per run folder: an advisory lock on ``<run>/run.lock``.

The lock is an ``flock`` on the file, which the kernel releases when the process ends in any way (exit, crash,
``kill -9``): a lock file left by a dead run never blocks its resume. The file records the holder (PID, host,
start time, command) for the message a second run gets. A process that already holds a folder's lock may take it
again (several trainers in one test process); forked children (DataLoader workers) drop their copy.
"""
import fcntl
import os
import socket
import sys
import time

from utils.errors import RunBusy

LOCK_NAME = "run.lock"
_held = {}  # realpath of the lock file -> open file (this process's locks)


def _holder(path):
    try:
        with open(path) as f:
            return f.read().strip() or "unknown process"
    except OSError:
        return "unknown process"


def acquire(run_dir):
    """Lock ``run_dir`` for this process or raise RunBusy naming the live holder. Returns the lock file path."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.realpath(os.path.join(run_dir, LOCK_NAME))
    if path in _held:
        return path
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunBusy(f"run folder {run_dir} is in use by another run ({_holder(path)}): wait for it to end or stop "
                      "it, or give this run another --exp_name or --log_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"PID {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            f"{' '.join(sys.argv)[:300]}\n")
    f.flush()
    _held[path] = f
    return path


def _close_in_child():
    """After a fork (DataLoader workers): the child closes its copies of the lock files, so that only the process
    that took a lock holds it (a worker outliving a killed trainer must not block the resume)."""
    for f in _held.values():
        f.close()
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def release(run_dir):
    """Give the lock of ``run_dir`` back (also done by the kernel when the process ends)."""
    path = os.path.realpath(os.path.join(run_dir, LOCK_NAME))
    f = _held.pop(path, None)
    if f is not None:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
