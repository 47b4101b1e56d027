"""An s3rver (npm) process on loopback for the S3 capture runs."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from .util import REPO, free_port, log
from .procs import CLK_TCK, proc_cpu_ticks


S3_BUCKET = "bench"


class S3rverProcess:
    """s3rver (npm, installed in node_modules by scripts/deps.sh) on a free loopback
    port with its store in a temporary directory and one bucket. stop() ends it by
    its pid and removes the directory."""

    def __init__(self, bucket, keep=False):
        script = os.path.join(REPO, "node_modules", "s3rver", "bin", "s3rver.js")
        if not os.path.exists(script):
            raise RuntimeError(f"{script} not found: run scripts/deps.sh (npm ci) for --s3")
        if not shutil.which("node"):
            raise RuntimeError("node not found: run scripts/deps.sh for --s3")
        self.keep = keep
        self.bucket = bucket
        self.dir = tempfile.mkdtemp(prefix="zetlbench-s3rver-")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.logf = open(os.path.join(self.dir, "s3rver.log"), "wb")
        # s3rver 3.7.1 makes ListObjectsV2 continuation tokens with DES, which Node 17+
        # only offers with the legacy provider (see docs/s3.md).
        self.proc = subprocess.Popen(
            ["node", "--openssl-legacy-provider", script, "--directory",
             os.path.join(self.dir, "data"), "--address", "127.0.0.1", "--port",
             str(self.port), "--silent", "--no-vhost-buckets", "--configure-bucket", bucket],
            cwd=REPO, stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("s3rver did not start")
                time.sleep(0.05)
        # The bucket exists once a listing of it answers 200.
        while True:
            try:
                self.list("")
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.1)

    def cpu_s(self):
        return proc_cpu_ticks(self.proc.pid) / CLK_TCK if self.proc else None

    def request(self, method, path, query=None):
        """Unsigned request (s3rver serves anonymous requests): returns the body."""
        import http.client
        import urllib.parse
        target = "/" + self.bucket + ("/" + urllib.parse.quote(path) if path else "")
        if query:
            target += "?" + urllib.parse.urlencode(query)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            c.request(method, target)
            r = c.getresponse()
            body = r.read()
        finally:
            c.close()
        if r.status >= 300:
            raise RuntimeError(f"s3rver {method} {target}: {r.status} {body[:300]!r}")
        return body

    def list(self, prefix):
        """{key: size} of every object under prefix (ListObjectsV2, all pages)."""
        import xml.etree.ElementTree as ET
        out, token = {}, None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            root = ET.fromstring(self.request("GET", "", q))
            tag = lambda e: e.tag.split("}")[-1]
            for c in root:
                if tag(c) == "Contents":
                    d = {tag(x): x.text for x in c}
                    out[d["Key"]] = int(d["Size"])
            trunc = [c.text for c in root if tag(c) == "IsTruncated"]
            token = ([c.text for c in root if tag(c) == "NextContinuationToken"] or [None])[0]
            if not trunc or trunc[0] != "true" or not token:
                return out

    def get(self, key):
        return self.request("GET", key)

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            self.proc = None
        if not self.logf.closed:
            self.logf.close()
        if self.keep:
            log(f"kept s3rver directory {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
