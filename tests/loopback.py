"""A loopback HTTP server over a folder, as a user serves a packaged bundle (`python -m http.server --bind 127.0.0.1`)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from pathlib import Path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output free of request lines
        pass


@contextlib.contextmanager
def serving(root: Path):
    """Serve `root` on 127.0.0.1 (a free port) while the block runs; yields the base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
