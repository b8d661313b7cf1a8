"""A tiny HTTP file server on 127.0.0.1 for download tests.

Written here rather than using `http.server.SimpleHTTPRequestHandler` because the tests need
what that one lacks: Range requests (206 answers), switching them off, cutting a body
short, and a log of the requests received.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FileServer:
    """Serves `files` (URL path -> bytes); the test flips the switches between requests."""

    files: dict[str, bytes]
    ranges: bool = True  # answer Range requests with 206 (else ignore them: 200, whole file)
    cut_after: int | None = None  # send only this many body bytes once, then close
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    url: str = ""


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet tests
            pass

        def do_GET(self) -> None:
            server.requests.append((self.path, self.headers.get("Range")))
            body = server.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and server.ranges:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_error(416, "Range Not Satisfiable")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if server.cut_after is not None:
                payload, server.cut_after = payload[: server.cut_after], None
                self.close_connection = True
            self.wfile.write(payload)

    return Handler


@contextmanager
def serve(files: dict[str, bytes]) -> Iterator[FileServer]:
    """Serve `files` on a free port of 127.0.0.1 while the block runs."""
    state = FileServer(dict(files))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
