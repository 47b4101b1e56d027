"""S3 test peers for the integration tests (standard library only):

- S3rver: the s3rver npm server (node_modules/, see package.json) on a free
  loopback port, stopped by pid.
- S3Client: an independent S3 client signing with AWS Signature V4 written
  from the AWS specification (hmac/hashlib), used to read back what zetl
  stored.
- FaultProxy: a loopback HTTP server in front of s3rver that checks every
  request's SigV4 signature and payload hash the way AWS does (s3rver does
  not check V4 signatures), counts requests, and injects faults by rule:
  HTTP 500/503/429/403 with S3 error XML, a connection reset mid-body, a
  partial response body, a stall.
"""

import datetime
import hashlib
import hmac
import http.client
import http.server
import os
import re
import shutil
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"
UNRESERVED = "-_.~"


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _enc(s):
    return urllib.parse.quote(s, safe=UNRESERVED)


# ---- SigV4 (from the AWS documentation, independent of zetl and curl) ----

def canonical_uri(raw_path):
    path = urllib.parse.unquote(raw_path)
    return "/".join(_enc(seg) for seg in path.split("/")) or "/"


def canonical_query(raw_query):
    pairs = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
    return "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted((k, v) for k, v in pairs))


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret, date, region, service="s3"):
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def string_to_sign(amzdate, scope, creq):
    return "AWS4-HMAC-SHA256\n%s\n%s\n%s" % (amzdate, scope,
                                             hashlib.sha256(creq.encode()).hexdigest())


def sign(method, host, raw_path, raw_query, headers, body, region, access=ACCESS_KEY,
         secret=SECRET_KEY, token=None):
    """Returns the headers to send (incl. Authorization) for a request."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amzdate = now.strftime("%Y%m%dT%H%M%SZ")
    h = {k.lower(): v for k, v in headers.items()}
    h["host"] = host
    h["x-amz-date"] = amzdate
    h["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    if token:
        h["x-amz-security-token"] = token
    names = sorted(h)
    creq = "\n".join([method, canonical_uri(raw_path), canonical_query(raw_query),
                      "".join(f"{n}:{' '.join(h[n].split())}\n" for n in names),
                      ";".join(names), h["x-amz-content-sha256"]])
    scope = f"{amzdate[:8]}/{region}/s3/aws4_request"
    sig = hmac.new(signing_key(secret, amzdate[:8], region),
                   string_to_sign(amzdate, scope, creq).encode(), hashlib.sha256).hexdigest()
    h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                          f"SignedHeaders={';'.join(names)}, Signature={sig}")
    return h


def verify(method, raw_path, raw_query, headers, body, region, secret=SECRET_KEY, token=None):
    """Checks a request as S3 would. Returns None, or (status, code, message, extra)."""
    auth = headers.get("authorization", "")
    m = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/aws4_request, *"
                 r"SignedHeaders=([a-z0-9;-]+), *Signature=([0-9a-f]{64})$", auth)
    if not m:
        return (400, "AuthorizationHeaderMalformed", "The authorization header is malformed", {})
    _, date, req_region, signed, sig = m.groups()
    if req_region != region:
        return (400, "AuthorizationHeaderMalformed",
                f"The authorization header is malformed; the region '{req_region}' is wrong; "
                f"expecting '{region}'", {"Region": region})
    names = signed.split(";")
    for need in ("host", "x-amz-date", "x-amz-content-sha256"):
        if need not in names:
            return (403, "AccessDenied", f"{need} must be signed", {})
    if "x-amz-security-token" in headers and "x-amz-security-token" not in names:
        return (403, "AccessDenied", "x-amz-security-token must be signed", {})
    if token is not None and headers.get("x-amz-security-token") != token:
        return (403, "InvalidToken", "The provided token is malformed or otherwise invalid.", {})
    payload = headers.get("x-amz-content-sha256", "")
    if payload != "UNSIGNED-PAYLOAD" and payload != hashlib.sha256(body).hexdigest():
        return (400, "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.", {})
    for n in names:
        if n not in headers:
            return (403, "SignatureDoesNotMatch", f"signed header {n} was not sent", {})
    creq = "\n".join([method, canonical_uri(raw_path), canonical_query(raw_query),
                      "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names),
                      signed, payload])
    amzdate = headers.get("x-amz-date", "")
    scope = f"{date}/{region}/s3/aws4_request"
    want = hmac.new(signing_key(secret, date, region),
                    string_to_sign(amzdate, scope, creq).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, sig):
        return (403, "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.", {"CanonicalRequest": creq})
    return None


def error_xml(code, message, extra=None):
    parts = [f"<Code>{code}</Code>", f"<Message>{_xml_escape(message)}</Message>"]
    for k, v in (extra or {}).items():
        parts.append(f"<{k}>{_xml_escape(v)}</{k}>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>' + "".join(parts) +
            "<RequestId>zetltest</RequestId></Error>").encode()


def _xml_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---- s3rver ----

class S3rver:
    """s3rver from node_modules on a free loopback port, with one bucket."""

    def __init__(self, source_dir, bucket):
        self.dir = tempfile.mkdtemp(prefix="zetl-s3rver-")
        self.port = _free_port()
        self.bucket = bucket
        script = os.path.join(source_dir, "node_modules", "s3rver", "bin", "s3rver.js")
        if not os.path.exists(script):
            raise RuntimeError(f"{script} not found: run scripts/deps.sh (npm ci)")
        self.log = open(os.path.join(self.dir, "s3rver.log"), "wb")
        self.proc = subprocess.Popen(
            # s3rver 3.7.1 makes ListObjectsV2 continuation tokens with DES, which
            # Node 17+ (OpenSSL 3) only offers with the legacy provider; without it
            # every truncated listing is a 500 InternalError.
            ["node", "--openssl-legacy-provider", script, "--directory", os.path.join(self.dir, "data"), "--address",
             "127.0.0.1", "--port", str(self.port), "--silent", "--no-vhost-buckets",
             "--configure-bucket", bucket],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError("s3rver did not start")
                time.sleep(0.05)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- an independent client ----

class S3Error(Exception):
    def __init__(self, status, body):
        super().__init__(f"{status}: {body[:300]!r}")
        self.status = status
        self.body = body


class S3Client:
    def __init__(self, endpoint, bucket, region="us-east-1"):
        u = urllib.parse.urlsplit(endpoint)
        self.host = u.netloc
        self.bucket = bucket
        self.region = region

    def request(self, method, key="", query="", body=b""):
        path = "/" + self.bucket + ("/" + urllib.parse.quote(key, safe="/" + UNRESERVED)
                                    if key else "")
        h = sign(method, self.host, path, query, {}, body, self.region)
        c = http.client.HTTPConnection(self.host, timeout=60)
        c.request(method, path + ("?" + query if query else ""), body=body or None, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        if r.status >= 300:
            raise S3Error(r.status, data)
        return data

    def get(self, key):
        return self.request("GET", key)

    def put(self, key, data):
        self.request("PUT", key, body=data)

    def delete(self, key):
        self.request("DELETE", key)

    def list(self, prefix=""):
        """Every key under prefix (ListObjectsV2, all pages): {key: size}."""
        out, token = {}, None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            root = ET.fromstring(self.request("GET", query=urllib.parse.urlencode(q)))
            tag = lambda e: e.tag.split("}")[-1]
            for c in root:
                if tag(c) == "Contents":
                    d = {tag(x): x.text for x in c}
                    out[d["Key"]] = int(d["Size"])
            trunc = [c.text for c in root if tag(c) == "IsTruncated"]
            token = ([c.text for c in root if tag(c) == "NextContinuationToken"] or [None])[0]
            if not trunc or trunc[0] != "true":
                return out


# ---- the fault proxy ----

class Rule:
    """Matches requests by method and a regex on the path+query; acts `times` times
    (None: always). action: ("status", code) | ("error", status, code, message, extra)
    | ("reset",) | ("partial",) | ("stall", seconds)."""

    def __init__(self, method, pattern, action, times=1):
        self.method = method
        self.re = re.compile(pattern)
        self.action = action
        self.times = times
        self.hits = 0

    def take(self, method, target):
        if self.method not in (None, method) or not self.re.search(target):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


STATUS_CODES = {500: ("InternalError", "We encountered an internal error. Please try again."),
                503: ("SlowDown", "Please reduce your request rate."),
                429: ("SlowDown", "Please reduce your request rate."),
                403: ("AccessDenied", "Access Denied"),
                404: ("NoSuchBucket", "The specified bucket does not exist")}


class FaultProxy:
    """Loopback HTTP/1.1 server forwarding to `upstream` (host:port) after checking
    SigV4; `rules` inject faults. `log` holds (method, target, outcome) per request."""

    def __init__(self, upstream, region="us-east-1", token=None):
        self.upstream = upstream
        self.region = region
        self.token = token
        self.rules = []
        self.log = []
        self.sig_failures = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def add(self, method, pattern, action, times=1):
        r = Rule(method, pattern, action, times)
        with self.lock:
            self.rules.append(r)
        return r

    def clear(self):
        with self.lock:
            self.rules = []
            self.log = []

    def count(self, method=None, pattern=".*", outcome=None):
        rx = re.compile(pattern)
        with self.lock:
            return sum(1 for m, t, o in self.log if method in (None, m) and rx.search(t)
                       and outcome in (None, o))

    def _record(self, method, target, outcome):
        with self.lock:
            self.log.append((method, target, outcome))

    def _send(self, h, status, body, headers=None, head=False, head_length=None):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(head_length if head and head_length is not None
                                            else len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    @staticmethod
    def _rst(h):
        # SO_LINGER 0: close sends a TCP reset, like a dropped connection.
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.close_connection = True
        h.connection.close()

    def _handle(self, h):
        method, target = h.command, h.path
        n = int(h.headers.get("Content-Length") or 0)
        rule = None
        with self.lock:
            for r in self.rules:
                if r.take(method, target):
                    rule = r
                    break
        act = rule.action if rule else None
        if act and act[0] == "reset":
            # Read part of the body (or none), then drop the connection.
            if n:
                h.rfile.read(min(n, 1024))
            self._record(method, target, "reset")
            self._rst(h)
            return
        if act and act[0] == "stall":
            self._record(method, target, "stall")
            time.sleep(act[1])
            self._rst(h)
            return
        body = h.rfile.read(n) if n else b""
        if act and act[0] in ("status", "error"):
            if act[0] == "status":
                status = act[1]
                code, msg = STATUS_CODES[status]
                extra = {}
            else:
                _, status, code, msg, extra = act
            self._record(method, target, str(status))
            self._send(h, status, error_xml(code, msg, extra),
                       {"Content-Type": "application/xml"}, head=method == "HEAD")
            return
        u = urllib.parse.urlsplit(target)
        hdrs = {k.lower(): v for k, v in h.headers.items()}
        bad = verify(method, u.path, u.query, hdrs, body, self.region, token=self.token)
        if bad:
            status, code, msg, extra = bad
            with self.lock:
                self.sig_failures.append((method, target, code, extra))
            self._record(method, target, code)
            self._send(h, status, error_xml(code, msg, {k: v for k, v in extra.items()
                                                        if k == "Region"}),
                       {"Content-Type": "application/xml"}, head=method == "HEAD")
            return
        c = http.client.HTTPConnection(self.upstream, timeout=60)
        fwd = {k: v for k, v in h.headers.items()
               if k.lower() not in ("connection", "expect", "transfer-encoding")}
        c.request(method, target, body=body if n or method in ("PUT", "POST") else None,
                  headers=fwd)
        r = c.getresponse()
        data = r.read()
        c.close()
        rh = {k: v for k, v in r.getheaders()
              if k.lower() not in ("connection", "transfer-encoding", "content-length",
                                   "keep-alive")}
        if act and act[0] == "partial" and method == "GET" and len(data) > 1:
            self._record(method, target, "partial")
            h.send_response(r.status)
            for k, v in rh.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[:len(data) // 2])
            h.wfile.flush()
            self._rst(h)
            return
        self._record(method, target, str(r.status))
        self._send(h, r.status, data, rh, head=method == "HEAD",
                   head_length=r.getheader("Content-Length"))
