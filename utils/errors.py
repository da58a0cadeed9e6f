"""Errors caused by the user's input or the machine (a flag, a file, a dataset, a full disk, a second run), reported
as one line without a traceback: ``error: <what> <where>: <fix>``.

``train.py``, ``eval.py`` and ``tools/visualize.py`` catch :class:`UserError` and print :func:`message`. The data
layer raises :class:`MissingFile` / :class:`BadData` / :class:`UnreadableFile`, which are also a
``FileNotFoundError`` / ``ValueError`` / ``OSError``, so callers that catch those keep working. A DataLoader worker
re-raises an exception in the main process with the same type but with the worker's traceback in the text;
:func:`message` recovers the original one-line message from it. The table of every case and its message:
docs/bad_input.md.
"""
import errno

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """Bad input: the message names the file / flag / key and the fix."""


class ConfigError(UserError, ValueError):
    """A bad option or config file (``options.py``; train.py / eval.py print it without a traceback)."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the run needs does not exist."""


class BadData(UserError, ValueError):
    """A file or table lacks what the run needs, or holds values that make no sense."""


class UnreadableFile(UserError, OSError):
    """A file exists but cannot be decoded (truncated, corrupt, wrong format)."""


class BadCheckpoint(UserError, ValueError, RuntimeError):
    """A checkpoint is unreadable, of the other stage, or does not fit the model it is loaded into (also a
    ValueError / RuntimeError, what callers caught before)."""


class DiskFull(UserError, OSError):
    """A write failed for lack of space (or quota); what was there before is kept."""


class RunBusy(UserError):
    """Another live process is writing to the same run folder."""


def disk_full_cause(err):
    """The OSError (ENOSPC / EDQUOT) in ``err``'s chain of causes and contexts, or None. torch.save reports a
    failed write as a RuntimeError ("unexpected pos") whose context is the OSError."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def message(err):
    """The one-line message of ``err``, without the traceback a DataLoader worker adds to it."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text
