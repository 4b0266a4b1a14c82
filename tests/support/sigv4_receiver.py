"""A remote-write receiver that checks AWS SigV4 signatures with botocore.

It stands in for Amazon Managed Service for Prometheus in the tests: every POST is signed
again by botocore, an implementation independent of pushprobe's, from the parts the request
names in SignedHeaders, its X-Amz-Date and its exact body, and answered 204 when the
signatures match and 403 when they do not, when the key is unknown, or when the date is more
than five minutes away from now (as AWS does). The first --fail-first requests are answered
503 instead, to show retries. Each request is logged as one JSON line (status, reason, date,
signature, key id, SHA-256 of the body and, when accepted, the first 16 hex digits of the
SHA-256 of the secret that matched) and each accepted body is kept as accepted-N.bin.

--keys-file names a file of ID=SECRET lines, read again for every request, so that a test can
rotate keys mid-run; an ID may have several secrets (both accepted while a rotation overlaps).

Usage: sigv4_receiver.py --dir DIR --region R [--service aps] --key ID=SECRET [--key ...]
       [--keys-file PATH] [--fail-first N]
The port it listens on (127.0.0.1, chosen by the system) is written to DIR/port.
"""

import argparse
import datetime
import hashlib
import hmac
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$"
)
MAX_SKEW = datetime.timedelta(minutes=5)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--service", default="aps")
    parser.add_argument("--key", action="append", default=[])
    parser.add_argument("--keys-file")
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()

    def known_keys():
        """Key id -> its secrets: the --key options, then the keys file as it is now."""
        pairs = [k.split("=", 1) for k in args.key]
        if args.keys_file:
            try:
                with open(args.keys_file) as f:
                    pairs += [l.strip().split("=", 1) for l in f if "=" in l]
            except FileNotFoundError:
                pass
        keys = {}
        for key_id, secret in pairs:
            keys.setdefault(key_id, []).append(secret)
        return keys
    lock = threading.Lock()
    state = {"requests": 0, "accepted": 0}
    log_path = os.path.join(args.dir, "requests.jsonl")

    def check(handler, body):
        """Returns (status, reason, fields) for one request."""
        auth = handler.headers.get("Authorization", "")
        m = AUTH_RE.match(auth)
        if not m:
            return 403, "missing or malformed Authorization", {}
        key_id, day, region, service, signed, signature = m.groups()
        amz_date = handler.headers.get("X-Amz-Date", "")
        fields = {"key_id": key_id, "date": amz_date, "signature": signature}
        secrets = known_keys().get(key_id)
        if not secrets:
            return 403, "unknown access key", fields
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
        except ValueError:
            return 403, "unreadable X-Amz-Date", fields
        if abs(datetime.datetime.now(datetime.timezone.utc) - when) > MAX_SKEW:
            return 403, "Signature expired: X-Amz-Date is more than 5 minutes away", fields
        headers = {}
        for name in signed.split(";"):
            value = handler.headers.get(name)
            if value is None:
                return 403, "a signed header is missing: " + name, fields
            headers[name] = value
        url = "http://" + headers.get("host", "") + handler.path
        request = AWSRequest(method=handler.command, url=url, data=body, headers=headers)
        request.context["timestamp"] = amz_date
        token = handler.headers.get("X-Amz-Security-Token")
        for secret in secrets:
            signer = SigV4Auth(Credentials(key_id, secret, token), args.service, args.region)
            canonical = signer.canonical_request(request)
            expected = signer.signature(signer.string_to_sign(request, canonical), request)
            if hmac.compare_digest(expected, signature):
                fields["secret_sha256"] = hashlib.sha256(secret.encode()).hexdigest()[:16]
                return 204, "ok", fields
        return 403, "The request signature we calculated does not match", fields

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with lock:
                n = state["requests"]
                state["requests"] += 1
            status, reason, fields = check(self, body)
            if status == 204 and n < args.fail_first:
                status, reason = 503, "failing on purpose"
            entry = dict(fields, n=n, status=status, reason=reason,
                         body_sha256=hashlib.sha256(body).hexdigest(), path=self.path)
            with lock:
                if status == 204:
                    name = "accepted-%d.bin" % state["accepted"]
                    state["accepted"] += 1
                    with open(os.path.join(args.dir, name), "wb") as f:
                        f.write(body)
                with open(log_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")
            answer = b"" if status == 204 else json.dumps({"message": reason}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            if answer:
                self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = os.path.join(args.dir, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, os.path.join(args.dir, "port"))
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
