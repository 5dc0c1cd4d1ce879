"""A toy endpoint for the compose cluster: `GET /healthz` answers `ok`, `GET /` says which
region's endpoint it is.  Standard library only, so it runs in any python image.

    python toy.py --listen 0.0.0.0:8080 --name us
"""

from __future__ import annotations

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


def handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Toy(BaseHTTPRequestHandler):
        server_version = "toy"

        def do_GET(self) -> None:
            if self.path == "/healthz":
                body = b"ok\n"
            elif self.path == "/":
                body = f"toy endpoint in region {name}\n".encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a probe every second per node: not worth a line each

    return Toy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="0.0.0.0:8080", metavar="HOST:PORT")
    parser.add_argument("--name", required=True, help="the region it stands for")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), handler(args.name))

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)  # PID 1 in a container: SIGTERM does nothing unless handled

    signal.signal(signal.SIGTERM, stop)
    print(f"toy endpoint {args.name}: listening on {host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
