"""A gRPC server offering the standard grpc.health.v1 service (grpcio-health-checking).

It stands in for any gRPC server a probe watches: its health servicer is the reference one,
so what it answers (SERVING, NOT_SERVING, UNKNOWN, NOT_FOUND for a service it does not know)
is what real servers answer.

The test steers it through a control file, DIR/statuses, which it rewrites (write, then
rename) whenever a service should change: one "SERVICE STATUS" line per service, "-" for the
empty service name (the server as a whole), STATUS one of UNKNOWN, SERVING, NOT_SERVING,
SERVICE_UNKNOWN. The server reads the file every 50 ms; once it has applied a new content, it
writes the same content to DIR/applied, so the test knows the change is in effect.

Every call is logged to DIR/calls.jsonl as one JSON line: the method and the request metadata
(what a probe sends besides its message).

Usage: grpc_health_server.py --dir DIR [--cert CERT.pem --key KEY.pem]
With --cert and --key it serves TLS (ALPN h2), else plaintext HTTP/2. The port it listens on
(127.0.0.1, chosen by the system) is written to DIR/port.
"""

import argparse
import json
import os
import threading
import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

STATUSES = dict(health_pb2.HealthCheckResponse.ServingStatus.items())


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def apply(servicer, text):
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        service, status = line.rsplit(" ", 1)
        if service == "-":
            service = ""
        servicer.set(service, STATUSES[status])


class CallLog(grpc.ServerInterceptor):
    """Appends each call's method and metadata to a JSON-lines file."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def intercept_service(self, continuation, details):
        line = json.dumps(
            {"method": details.method, "metadata": dict(details.invocation_metadata)}
        )
        with self.lock, open(self.path, "a") as f:
            f.write(line + "\n")
        return continuation(details)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[CallLog(os.path.join(args.dir, "calls.jsonl"))],
    )
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if args.cert and args.key:
        with open(args.key, "rb") as f:
            key = f.read()
        with open(args.cert, "rb") as f:
            cert = f.read()
        creds = grpc.ssl_server_credentials([(key, cert)])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        print("could not bind a port on 127.0.0.1", file=sys.stderr)
        sys.exit(1)
    server.start()

    control = os.path.join(args.dir, "statuses")
    applied = os.path.join(args.dir, "applied")
    write_atomically(os.path.join(args.dir, "port"), str(port))
    print(f"serving grpc.health.v1 on 127.0.0.1:{port}", flush=True)

    last = None
    while True:
        try:
            with open(control) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        if text != last:
            apply(servicer, text)
            write_atomically(applied, text)
            print(f"applied: {text!r}", flush=True)
            last = text
        time.sleep(0.05)


if __name__ == "__main__":
    main()
