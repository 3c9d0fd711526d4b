"""Errors raised on bad user input; the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input data: names the offending file (when there is one) and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
