"""Errors raised on bad user input, and how they reach the user: one line, naming the file and the problem."""

from __future__ import annotations

import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2  # the exit code of bad input, in the `cellzoo` command and under `python -m monai.bundle run`
DEBUG_VARIABLE = "CELLZOO_DEBUG"  # set to 1 for full tracebacks instead of the one-line report


class InputError(ValueError):
    """Bad input data: names the offending file (when there is one) and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def _chain(error: BaseException | None):
    """`error` and what it was raised from (MONAI wraps errors of configs and transforms in RuntimeErrors)."""
    seen = set()
    while error is not None and id(error) not in seen:
        yield error
        seen.add(id(error))
        error = error.__cause__ or error.__context__


def find_input_error(error: BaseException | None) -> InputError | None:
    """The InputError in `error` or in what it was raised from, or None."""
    return next((e for e in _chain(error) if isinstance(e, InputError)), None)


def user_error_message(error: BaseException | None) -> str | None:
    """One line for an error the user can fix, else None: an InputError, or an OS error on a named file
    (an output that cannot be written), found in `error` or in what it was raised from."""
    for cause in _chain(error):
        if isinstance(cause, InputError):
            return str(cause)
        if isinstance(cause, OSError) and cause.filename:
            return f"{cause.filename}: {cause.strerror or cause}"
    return None


def brief_input_errors() -> None:
    """Make an uncaught error caused by bad input print as one line instead of a traceback.

    For `python -m monai.bundle run`, where no cellzoo command catches errors: the bundles' configs call
    this first in `initialize`. Other errors keep their traceback, and CELLZOO_DEBUG=1 shows it for all.
    """
    previous = sys.excepthook
    if getattr(previous, "cellzoo_brief", False):
        return

    def hook(kind, value, traceback):
        message = user_error_message(value)
        if message is None or os.environ.get(DEBUG_VARIABLE):
            previous(kind, value, traceback)
            return
        print(f"error: {message} (set {DEBUG_VARIABLE}=1 for the traceback)", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # exit at once: data-loading threads a failed run leaves behind would otherwise abort the
        # interpreter's shutdown ("terminate called without an active exception", exit code 134)
        os._exit(EXIT_BAD_INPUT)

    hook.cellzoo_brief = True
    sys.excepthook = hook
