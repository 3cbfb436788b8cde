"""`gridwatch alerts tail` signs in again after a "try again later" instead of exiting."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from cloud.alerts.cli import SignInFailed, sign_in


class SignInDouble(BaseHTTPRequestHandler):
    """A service's /auth/token answering from a script: status, headers, body."""

    script: ClassVar[list[tuple[int, dict[str, str], dict[str, str]]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status, headers, body = self.script.pop(0)
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def serve(script: list[tuple[int, dict[str, str], dict[str, str]]]) -> ThreadingHTTPServer:
    SignInDouble.script = script
    server = ThreadingHTTPServer(("127.0.0.1", 0), SignInDouble)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_too_many_sign_ins_at_once_is_waited_out() -> None:
    """It exited with rc 1 when three people behind one address signed in together."""
    busy = {"detail": "too many sign-ins at once: try again shortly"}
    server = serve([(429, {"Retry-After": "0"}, busy), (200, {}, {"access_token": "t0k"})])
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert sign_in(url, "worker", "secret") == "t0k"
    finally:
        server.shutdown()


def test_a_wrong_password_still_ends_it() -> None:
    server = serve([(401, {}, {"detail": "wrong username or password"})])
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(SignInFailed, match="401"):
            sign_in(url, "worker", "wrong")
    finally:
        server.shutdown()
