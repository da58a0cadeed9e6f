"""Errors caused by the user's input (a flag, a file, a dataset), reported as one line without a traceback.

``train.py`` and ``eval.py`` catch :class:`UserError` and print :func:`message`. The data layer raises
:class:`MissingFile` / :class:`BadData` / :class:`UnreadableFile`, which are also a ``FileNotFoundError`` /
``ValueError`` / ``OSError``, so callers that catch those keep working. A DataLoader worker re-raises an
exception in the main process with the same type but with the worker's traceback in the text; :func:`message`
recovers the original one-line message from it.
"""


class UserError(Exception):
    """Bad input: the message names the file / flag / key and the fix."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the run needs does not exist."""


class BadData(UserError, ValueError):
    """A file or table lacks what the run needs, or holds values that make no sense."""


class UnreadableFile(UserError, OSError):
    """A file exists but cannot be decoded (truncated, corrupt, wrong format)."""


def message(err):
    """The one-line message of ``err``, without the traceback a DataLoader worker adds to it."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text
