"""The Python client of the egress tests, on /usr/bin/python3 (Debian's, which has grpcio and
websockets): `client.py REQUEST.json`, the request's mode, URL, method, headers and body read from
the file so that no token is on a command line or in the environment.

Prints `STATUS PROTOCOL`, then the body (request, ws, grpc) or a line `event INDEX DELAY_US` per
server-sent event as it arrives (sse), DELAY_US being its arrival less the send time in its data.
A non-2xx status is a reply, not an error; a failure to connect exits 1 with the reason on stderr.

CA and proxy, as each library does by default, nothing configured here:
- urllib (request, sse): OpenSSL's default paths, so SSL_CERT_FILE; HTTPS_PROXY/https_proxy and
  NO_PROXY through urllib's ProxyHandler (a CONNECT tunnel).
- websockets 10.4 (ws): SSL_CERT_FILE likewise; no proxy support at all (it came in 15.0).
- grpcio (grpc): its own roots, not OpenSSL's, so the certificates of SSL_CERT_FILE are handed to
  it; the lowercase grpc_proxy, https_proxy or http_proxy (the first set; HTTPS_PROXY in capitals
  is not read) for a CONNECT tunnel, and no_grpc_proxy/no_proxy.
"""
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def send(request):
    """The urllib response, an HTTPError being one too (its status and body)."""
    body = request["body"].encode() or None
    prepared = urllib.request.Request(request["url"], data=body, headers=request["headers"], method=request["method"])
    try:
        return urllib.request.urlopen(prepared)
    except urllib.error.HTTPError as error:
        return error


def print_head(response):
    # An HTTPError keeps http.client's response, which knows the version, in `fp`.
    version = getattr(response, "version", None) or response.fp.version
    print(response.status, "HTTP/1.0" if version == 10 else "HTTP/1.1", flush=True)


def plain(request):
    response = send(request)
    print_head(response)
    sys.stdout.buffer.write(response.read())


def sse(request):
    response = send(request)
    print_head(response)
    # http.client hands out a chunked body line by line as the chunks come.
    for line in response:
        if line.startswith(b"data: "):
            arrival = time.time_ns() // 1000
            index, sent = line[len(b"data: "):].split()
            print("event", int(index), arrival - int(sent), flush=True)


def ws(request):
    import websockets

    async def echo():
        async with websockets.connect(request["url"], extra_headers=request["headers"]) as socket:
            await socket.send(request["body"])
            return await socket.recv()

    reply = asyncio.run(echo())
    print(101, "HTTP/1.1")
    sys.stdout.write(reply)


def grpc_call(request):
    import grpc

    url = urllib.parse.urlsplit(request["url"])
    with open(os.environ["SSL_CERT_FILE"], "rb") as roots:
        credentials = grpc.ssl_channel_credentials(root_certificates=roots.read())
    metadata = [(name.lower(), value) for name, value in request["headers"].items()]
    with grpc.secure_channel(url.netloc, credentials) as channel:
        # No (de)serializers: the message is the body's bytes as they are.
        call = channel.unary_unary(url.path)
        try:
            reply = call(request["body"].encode(), metadata=metadata)
        except grpc.RpcError as error:
            print(error.code().name, "HTTP/2")
            sys.stdout.write(error.details() or "")
            return
    print("OK", "HTTP/2")
    sys.stdout.buffer.write(reply)


MODES = {"request": plain, "sse": sse, "ws": ws, "grpc": grpc_call}


def main():
    with open(sys.argv[1]) as file:
        request = json.load(file)
    try:
        MODES[request["mode"]](request)
    except OSError as error:
        sys.exit(f"client.py: {error}")


main()
