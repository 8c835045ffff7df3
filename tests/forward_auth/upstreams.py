"""The servers behind the proxies in the forward-auth tests: an application that echoes and remembers what it received,
and a recorder between a proxy and apikeys that remembers what /verify received."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

from tests.forward_auth.support import TAG
from tests.forward_auth.support import header_values
from tests.forward_auth.support import send


class EchoHandler(BaseHTTPRequestHandler):
    def _echo(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received = {
            "method": self.command,
            "path": self.path,
            # Should a key ever get through, the test sees that it did, never what it was.
            "headers": [(n, _redacted(n, v)) for n, v in self.headers.items()],
            "body": body.decode("latin-1"),
        }
        self.server.record(received)
        payload = json.dumps(received).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _echo

    def log_message(self, *args):
        pass


class Application(ThreadingHTTPServer):
    """A protected application on a free port that remembers every request it got."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._received: list[dict] = []
        self._lock = threading.Lock()

    def record(self, received: dict) -> None:
        with self._lock:
            self._received.append(received)

    def received(self, tag: str) -> list[dict]:
        """The requests that carried this tag."""
        with self._lock:
            return [r for r in self._received if tag in header_values(r, TAG)]  # any case: Envoy lowers names


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class RecorderHandler(BaseHTTPRequestHandler):
    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = [(n, v) for n, v in self.headers.items() if n.lower() not in HOP_BY_HOP]
        self.server.record({"path": self.path, "headers": [(n, _redacted(n, v)) for n, v in headers]})
        forwarded = [(n, v) for n, v in headers if n.lower() != "content-length"]  # send() sets it for a body
        answer = send(self.server.target, self.command, self.path, forwarded, body or None)
        self.send_response_only(answer.status)
        for name, value in answer.headers.items():
            if name.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _forward

    def log_message(self, *args):
        pass


def _redacted(name: str, value: str) -> str:
    # A key travels in X-Api-Key or as `Authorization: Bearer <key>`.
    return "<redacted>" if name.lower().replace("_", "-") in ("x-api-key", "authorization") else value


class VerifyRecorder(ThreadingHTTPServer):
    """Between a proxy and apikeys on a free port: passes every request on and remembers the headers it carried."""

    daemon_threads = True

    def __init__(self, target: str):
        super().__init__(("127.0.0.1", 0), RecorderHandler)
        self.target = target
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._received: list[dict] = []
        self._lock = threading.Lock()

    def record(self, received: dict) -> None:
        with self._lock:
            self._received.append(received)

    def mark(self) -> int:
        """A point in the record; ``since`` gives what came after it."""
        with self._lock:
            return len(self._received)

    def since(self, mark: int) -> list[dict]:
        with self._lock:
            return self._received[mark:]

    def __enter__(self) -> VerifyRecorder:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
