"""An ASGI app served by uvicorn on a free loopback port, in a thread: the one way the tests
start a real server (for clients that need a socket: the openai client, raw hang-ups, Chromium)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

START_TIMEOUT_S = 30.0


@contextlib.contextmanager
def serving(app):
    """``with serving(app) as (url, port):`` the server runs until the block ends."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server on port {port} did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
