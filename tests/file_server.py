"""A file server on a loopback port that serves scorer weights the way the Hugging Face hub does
(``/<repo>/resolve/<revision>/<file>`` answers with a redirect to another host name carrying the
file's sha256 and size) and as a plain URL, with cut connections and wrong bytes on request."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sd_optim.scoring.files import WeightFile

PAYLOAD = bytes(range(256)) * 12288  # 3 MiB: several chunks of progress
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """A loopback file server; ``cut_at`` bytes into the next ``cuts`` responses the connection is
    closed, ``corrupt`` serves other bytes than the announced checksum. ``hub`` maps
    ``<repo>/<file>`` to the bytes the hub serves for it (by default every file is PAYLOAD)."""

    def __init__(self, hub: dict[str, bytes] | None = None) -> None:
        self.hub = hub or {}
        self.requests: list[dict[str, str]] = []
        self.cuts, self.cut_at, self.corrupt = 0, len(PAYLOAD) // 2, False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, "range": self.headers.get("Range", ""),
                                        "auth": self.headers.get("Authorization", ""),
                                        "host": self.headers.get("Host", "")})
                if "/resolve/main/" in self.path:
                    name = self.path[1:].replace("/resolve/main/", "/")
                    body = server.hub.get(name, PAYLOAD) if not server.hub or name in server.hub else None
                    if body is None:
                        self.send_error(404)
                        return
                    self.send_response(302)
                    # the file itself is served from another host name (a CDN)
                    self.send_header("Location", f"http://localhost:{server.port}/cdn/{name}" if server.hub
                                     else f"http://localhost:{server.port}/cdn/w.bin")
                    self.send_header("X-Linked-Etag", f'"{hashlib.sha256(body).hexdigest()}"')
                    self.send_header("X-Linked-Size", str(len(body)))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path in ("/cdn/w.bin", "/plain/w.bin"):
                    self.send_file(PAYLOAD)
                elif self.path.startswith("/cdn/") and self.path[5:] in server.hub:
                    self.send_file(server.hub[self.path[5:]])
                else:
                    self.send_error(404)

            def send_file(self, payload: bytes):
                body = bytes(reversed(payload)) if server.corrupt else payload
                start = int(self.headers["Range"][6:].split("-")[0]) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if server.cuts:
                    server.cuts -= 1
                    self.wfile.write(body[start:max(start, server.cut_at)])
                    self.wfile.flush()
                    self.connection.close()
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


HF_FILE = WeightFile(option="weights", path="tiny/w.safetensors", about="tiny test weights",
                     hf_repo="org/tiny", hf_file="w.safetensors")
