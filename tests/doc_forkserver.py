"""A fork server for the doc test: one process imports torch, MONAI and cellzoo once (about 7 s on this CPU),
then runs each documented `python -m monai.bundle run` / `cellzoo` command in a forked child of itself, with
the command's own arguments, folder, environment and standard streams. A page's blocks run dozens of such
commands; without it, most of the doc test's time would go to importing MONAI again for each.

    server: python doc_forkserver.py serve SOCKET       (tests/test_docs_commands.py starts it)
    client: python doc_forkserver.py SOCKET KIND ARGS   (the python / cellzoo wrappers on the test's PATH;
                                                          KIND as in tests/doc_shim.py: bundle-run, cellzoo,
                                                          monai-bundle)
The client imports nothing heavy; it passes its stdin/stdout/stderr to the server and exits with the child's
exit code.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys


def serve(path: str) -> None:
    import doc_shim  # noqa: F401  (its imports below are what every child would import)
    import ignite  # noqa: F401
    import monai.bundle  # noqa: F401
    import torch  # noqa: F401

    import cellzoo.cli  # noqa: F401

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    print("ready", flush=True)
    while True:  # one command at a time, as a block runs them; forked from the main thread only
        connection, _ = listener.accept()
        _handle(connection)


def _handle(connection: socket.socket) -> None:
    with connection:
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        request = json.loads(message)
        pid = os.fork()
        if pid == 0:
            _child(request, fds)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        connection.sendall(struct.pack("i", os.waitstatus_to_exitcode(status)))


def _child(request: dict, fds: list[int]) -> None:
    """Become the command: its streams, folder and environment, then doc_shim's entry point; never returns."""
    code = 0
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import doc_shim

        doc_shim.main(request["argv"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - the command's own traceback, as python would print it
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def client(path: str, argv: list[str]) -> int:
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(path)
        socket.send_fds(connection, [request], [0, 1, 2])
        reply = b""
        while len(reply) < 4:
            chunk = connection.recv(4 - len(reply))
            if not chunk:
                return 1
            reply += chunk
    return struct.unpack("i", reply)[0]


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[1], sys.argv[2:]))
