"""A receiver as a Lago customer writes one: a real HTTP server (``http.server`` in a thread)
that verifies each webhook's signature with its own HMAC computation (not Tallyflow's code)
and counts each logical event once by ``X-Lago-Unique-Key``.

It can be told to fail the first N requests (HTTP 500) or to hang until released.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """What the server saw. ``key`` is the organization's HMAC key the receiver was given."""

    key: str = ""
    fail_first: int = 0
    hang: threading.Event | None = None
    requests: int = 0
    bad_signatures: int = 0
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # unique key -> body
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def verify(self, body: bytes, headers: Any) -> bool:
        """Lago's documented check: Base64(HMAC-SHA256(key, raw body)) == X-Lago-Signature."""
        expected = base64.b64encode(
            hmac.new(self.key.encode(), body, hashlib.sha256).digest()).decode()
        return (headers.get("X-Lago-Signature-Algorithm") == "hmac"
                and hmac.compare_digest(expected, headers.get("X-Lago-Signature", "")))


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.requests += 1
                failing = receiver.requests <= receiver.fail_first
            if receiver.hang is not None:
                receiver.hang.wait(30)
            if failing:
                self._answer(500, b'{"error": "try later"}')
                return
            if not receiver.verify(body, self.headers):
                with receiver.lock:
                    receiver.bad_signatures += 1
                self._answer(401, b"bad signature")
                return
            with receiver.lock:  # counted once per logical event
                receiver.events.setdefault(self.headers["X-Lago-Unique-Key"], json.loads(body))
            self._answer(200, b"ok")

        def _answer(self, code: int, text: bytes) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
            except OSError:  # the sender gave up (timeout)
                pass

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def receiving(key: str = "", fail_first: int = 0,
              hang: threading.Event | None = None) -> Iterator[Receiver]:
    receiver = Receiver(key=key, fail_first=fail_first, hang=hang)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        if hang is not None:
            hang.set()
        server.shutdown()
        server.server_close()
