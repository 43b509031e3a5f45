"""An HTTPS server on loopback, for the TLS tests and the benchmark's HTTPS loop: makes a
self-signed certificate in the directory argv[1] names, answers 200 to every GET, and prints the
port it listens on."""
import http.server, os, ssl, subprocess, sys

directory = sys.argv[1]
cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
if not os.path.exists(cert):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", key, "-out", cert],
        check=True, stderr=subprocess.DEVNULL)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The response goes out in several writes: without this, each waits for a delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
