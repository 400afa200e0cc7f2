"""A webhook receiver for the tests: HTTP, or HTTPS with a certificate and key.

    python3 webhook_receiver.py PORT OUT_DIR STATUS [CERT KEY]

Each POST is written to OUT_DIR/<n>.json (its body) and OUT_DIR/<n>.head (path and headers);
the answer is STATUS (a 3xx names a Location). Prints "ready" once it listens.
"""
import http.server
import os
import ssl
import sys

port, out, status = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
count = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        count += 1
        with open(os.path.join(out, f"{count}.json"), "wb") as f:
            f.write(body)
        with open(os.path.join(out, f"{count}.head"), "w") as f:
            f.write(f"{self.path}\n{self.headers}")
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", port), Handler)
if len(sys.argv) > 5:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
