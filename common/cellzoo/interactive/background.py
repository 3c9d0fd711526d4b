"""A cellzoo command run in a child process that can be watched and cancelled.

The napari widget runs predictions and fine-tunings this way rather than in a thread of the viewer's own
process: a bundle run cannot be stopped from outside once started in a thread, but a process can be
terminated, and a crash in a run (out of memory, a bad checkpoint) then ends the run, not the viewer.

`BackgroundRun` starts the command, reads its output line by line (tqdm's carriage-return updates count as
lines) and hands each to a callback; `progress_of(line)` reads tqdm's "k/n" counts. `wait()` returns the
exit code; `cancel()` terminates the process (its children too: it runs in its own process group).
`error_line()` is the one-line message cellzoo's command line printed on bad input ("cellzoo: error: ...").
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence

__all__ = ["BackgroundRun", "Cancelled", "progress_of"]

_COUNT = re.compile(r"(\d+)/(\d+)\s*\[")  # tqdm: " 3/8 [00:01<00:02, ...]"
ERROR_PREFIX = "cellzoo: error: "


class Cancelled(RuntimeError):
    """The user cancelled the run."""


def progress_of(line: str) -> tuple[int, int] | None:
    """(done, total) from a tqdm progress line, else None."""
    match = _COUNT.search(line)
    if not match or int(match.group(2)) == 0:
        return None
    return int(match.group(1)), int(match.group(2))


class BackgroundRun:
    """`python -m <module> <args>` in a child process, its output lines to `on_line` (from a reader thread)."""

    def __init__(self, args: Sequence[str], on_line: Callable[[str], None] | None = None,
                 env: dict | None = None, keep_lines: int = 200):
        self.args = [sys.executable, *map(str, args)]
        self.on_line = on_line or (lambda line: None)
        self.lines: deque[str] = deque(maxlen=keep_lines)
        self.cancelled = False
        self._process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True)  # its own process group: cancel() reaches the workers it starts
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        for chunk in iter(lambda: self._process.stdout.read1(4096), b""):
            buffer += chunk
            *complete, buffer = re.split(rb"[\r\n]", buffer)
            for raw in complete:
                self._emit(raw)
        self._emit(buffer)

    def _emit(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").strip()
        if line:
            self.lines.append(line)
            self.on_line(line)

    def running(self) -> bool:
        return self._process.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        code = self._process.wait(timeout)
        self._reader.join(5)
        return code

    def cancel(self) -> None:
        """Terminate the run and the processes it started; `wait()` then returns at once."""
        self.cancelled = True
        if self.running():
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def error_line(self) -> str:
        """cellzoo's one-line message if the run printed one, else the last line it printed."""
        messages = [line[len(ERROR_PREFIX):] for line in self.lines if line.startswith(ERROR_PREFIX)]
        return messages[-1] if messages else (self.lines[-1] if self.lines else "the run printed nothing")

    def check(self) -> None:
        """Wait; raise Cancelled if cancelled, RuntimeError with `error_line()` if the run failed."""
        code = self.wait()
        if self.cancelled:
            raise Cancelled("cancelled")
        if code != 0:
            raise RuntimeError(self.error_line())
