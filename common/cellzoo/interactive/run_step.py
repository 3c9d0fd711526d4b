"""`python -m cellzoo.interactive.run_step SPEC.json`: the child process of a fine-tuning started from napari.

Runs the bundle config the spec names; bad input ends with cellzoo's one-line message, as on the command line.
"""

from __future__ import annotations

import logging
import sys

from cellzoo.errors import EXIT_BAD_INPUT, user_error_message
from cellzoo.interactive.loop import run_in_process


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m cellzoo.interactive.run_step SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_in_process(argv[0])
    except Exception as err:  # noqa: BLE001 - bad input gets one line, bugs a traceback
        message = user_error_message(err)
        if message is None:
            raise
        print(f"\ncellzoo: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
