"""Integration test harness: throwaway PostgreSQL clusters, zetl processes,
and an independent reader of zetl's archive (zstd CLI + our own CSV parser
that keeps NULL and empty string apart).

Standard library only (Debian's python3). PostgreSQL refuses to run as root,
so clusters run as the `postgres` user via runuser when we are root.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

PG_BIN = os.environ.get("ZETL_PG_BIN", "/usr/lib/postgresql/15/bin")
ZETL_BIN = os.environ.get("ZETL_BIN", os.path.join(os.path.dirname(__file__), "../../build/zetl"))
SANITIZE = os.environ.get("ZETL_SANITIZE", "0") in ("1", "ON", "TRUE", "true")
SOURCE_DIR = os.environ.get("ZETL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))

PASSWORD = "zetl-secret-pw"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slot_group(schema, groups):
    """The slot group zetl puts a tenant schema in (zetl_source_group_of): FNV-1a of
    the schema name, mod groups."""
    h = 2166136261
    for c in schema.encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return h % groups if groups > 1 else 0


def as_pg_user(cmd):
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def give_to_pg_user(path, mode):
    """chmod, and owned by the user clusters run as (postgres when we are root)."""
    os.chmod(path, mode)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


class CA:
    """A throwaway certificate authority in a temp dir, made with the openssl CLI
    (EC P-256 keys: fast). cert is the PEM a client names in sslrootcert."""

    EXTENSIONS = """[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = ${ENV::ZETL_TEST_SAN}
"""

    def __init__(self, name="zetl test CA"):
        self.dir = tempfile.mkdtemp(prefix="zetl-ca-")
        self.cnf = os.path.join(self.dir, "openssl.cnf")
        with open(self.cnf, "w") as f:
            f.write(self.EXTENSIONS)
        self.key = os.path.join(self.dir, "ca.key")
        self.cert = os.path.join(self.dir, "ca.pem")
        self._openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", self.key, "-out",
                      self.cert, "-days", "2", "-subj", f"/CN={name}", "-config", self.cnf,
                      "-extensions", "ca")
        os.chmod(self.cert, 0o644)

    def _openssl(self, *args, san="DNS:unused"):
        env = dict(os.environ, ZETL_TEST_SAN=san)
        p = subprocess.run(["openssl", *args], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {p.stderr.decode()}")

    def issue(self, out_dir, names=("127.0.0.1", "localhost")):
        """A server certificate for names (IP or DNS subject alternative names; the first
        is also the CN), signed by this CA, as out_dir/server.crt and out_dir/server.key;
        returns their paths."""
        san = ", ".join(("IP:" if n.replace(".", "").isdigit() else "DNS:") + n for n in names)
        crt, key = os.path.join(out_dir, "server.crt"), os.path.join(out_dir, "server.key")
        csr = os.path.join(self.dir, "server.csr")
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={names[0]}",
                      "-config", self.cnf)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                      "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
                      "-out", crt, "-extfile", self.cnf, "-extensions", "server", san=san)
        give_to_pg_user(crt, 0o644)
        give_to_pg_user(key, 0o600)  # PostgreSQL refuses a key others may read
        return crt, key

    def destroy(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster:
    """A PostgreSQL 15 cluster in a temp dir on a free loopback port.

    With ssl (a CA), the server has ssl = on and a certificate from that CA for
    ssl_names (default 127.0.0.1 and localhost), and the role zetl may connect over
    TLS only (hostnossl: reject), so a client that skips TLS is refused."""

    def __init__(self, wal_level="logical", extra_conf="", ssl=None,
                 ssl_names=("127.0.0.1", "localhost")):
        self.dir = tempfile.mkdtemp(prefix="zetl-pg-")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.pid = None
        subprocess.run(
            as_pg_user([f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                        "--no-sync", "-E", "UTF8", "--locale=C"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if ssl is not None:
            crt, key = ssl.issue(self.dir, ssl_names)
            extra_conf += f"ssl = on\nssl_cert_file = '{crt}'\nssl_key_file = '{key}'\n"
        conf = f"""
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.dir}'
wal_level = {wal_level}
max_wal_senders = 20
max_replication_slots = 20
max_prepared_transactions = 10
logical_decoding_work_mem = 64kB
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
wal_sender_timeout = 60s
log_min_messages = warning
{extra_conf}
"""
        self._append(os.path.join(self.data, "postgresql.conf"), conf)
        hba = """
local all all trust
host all postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
"""
        if ssl is not None:
            hba += """hostnossl all all 127.0.0.1/32 reject
hostnossl replication all 127.0.0.1/32 reject
"""
        hba += """host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
"""
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write(hba)
        if os.geteuid() == 0:
            shutil.chown(os.path.join(self.data, "pg_hba.conf"), "postgres", "postgres")
        self.start()
        self.psql(f"CREATE ROLE zetl LOGIN SUPERUSER REPLICATION PASSWORD '{PASSWORD}'")

    @staticmethod
    def _append(path, text):
        with open(path, "a") as f:
            f.write(text)

    def start(self):
        subprocess.run(
            as_pg_user([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l",
                        os.path.join(self.dir, "log"), "-w", "-t", "60", "start"]),
            check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def stop(self):
        if self.pid is None:
            return
        subprocess.run(as_pg_user([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w",
                                   "stop"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            os.kill(self.pid, 0)
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.pid = None

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, db="postgres", user="zetl", password=PASSWORD):
        d = f"host=127.0.0.1 port={self.port} dbname={db} user={user}"
        if password:
            d += f" password={password}"
        return d

    def psql(self, sql, db="postgres", check=True):
        """Runs SQL as the superuser; returns rows as lists of strings (NULL -> None)."""
        p = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
             str(self.port), "-U", "postgres", "-d", db, "-A", "-t", "-F", "\x1f", "-R", "\x1e",
             "-P", "null=\x01NULL\x01", "-f", "-"],
            input=sql.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and p.returncode != 0:
            raise RuntimeError(f"psql failed: {p.stderr.decode()}\nSQL: {sql[:2000]}")
        out = p.stdout.decode()
        if out.endswith("\n"):
            out = out[:-1]
        rows = []
        for rec in out.split("\x1e"):
            if rec.strip("\n") == "":
                continue
            rec = rec.lstrip("\n")
            rows.append([None if v == "\x01NULL\x01" else v for v in rec.split("\x1f")])
        return rows

    def drop_slots(self, db):
        """Drops the replication slots of database db once nothing uses them."""
        deadline = time.time() + 30
        while self.psql(f"SELECT 1 FROM pg_replication_slots WHERE database = '{db}' AND active") \
                and time.time() < deadline:
            time.sleep(0.1)
        self.psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                  f"WHERE database = '{db}' AND NOT active")

    def createdb(self, name):
        self.psql(f'CREATE DATABASE "{name}"')
        return name


def parse_csv(text):
    """CSV as zetl writes it; returns rows of values, None for an unquoted empty field."""
    rows, row, i, n = [], [], 0, len(text)
    while i < n:
        # One field starts at i.
        if text[i] == '"':
            i += 1
            buf = []
            while True:
                j = text.index('"', i)
                buf.append(text[i:j])
                if j + 1 < n and text[j + 1] == '"':
                    buf.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
            row.append("".join(buf))
        else:
            j = i
            while j < n and text[j] not in ",\n":
                j += 1
            row.append(text[i:j] if j > i else None)
            i = j
        if i < n and text[i] == ",":
            i += 1
            if i == n or text[i] == "\n":  # an empty last field
                row.append(None)
                i += 1
                rows.append(row)
                row = []
            continue
        i += 1  # newline (or end)
        rows.append(row)
        row = []
    return rows


META = ["_zetl_op", "_zetl_lsn", "_zetl_seq", "_zetl_commit_ts", "_zetl_unchanged"]


def read_archive(root, stream=None):
    """Reads every batch under root (or root/stream) with the zstd CLI; verifies sha256.

    Returns (batches, rows): batches = list of manifests in LSN order; rows = list of
    dicts with the meta columns, the tenant column and the source columns of each
    row, plus "_table" and "_batch".
    """
    import hashlib
    streams = [stream] if stream else sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    batches, rows = [], []
    for s in streams:
        sdir = os.path.join(root, s)
        if not os.path.isdir(sdir):
            continue
        for name in sorted(os.listdir(sdir)):
            if name.startswith("."):
                raise AssertionError(f"leftover temporary entry {s}/{name} in archive")
            bdir = os.path.join(sdir, name)
            with open(os.path.join(bdir, "manifest.json")) as f:
                man = json.load(f)
            man["_dir"] = bdir
            batches.append(man)
            tcol = man["tenant_column"]
            for fi in man["files"]:
                path = os.path.join(bdir, fi["file"])
                with open(path, "rb") as f:
                    data = f.read()
                assert hashlib.sha256(data).hexdigest() == fi["sha256"], f"sha256 of {path}"
                assert len(data) == fi["bytes"], f"size of {path}"
                text = subprocess.run(["zstd", "-dc", path], check=True,
                                      stdout=subprocess.PIPE).stdout.decode("utf-8")
                names = META + [tcol] + [c["name"] for c in fi["columns"]]
                parsed = parse_csv(text)
                assert len(parsed) == fi["rows"], f"row count of {path}"
                for r in parsed:
                    assert len(r) == len(names), f"{path}: {len(r)} fields, expected {len(names)}"
                    d = dict(zip(names, r))
                    d["_table"] = fi["table"]
                    d["_batch"] = name
                    d["_stream"] = s
                    rows.append(d)
    rows.sort(key=lambda d: (int(d["_zetl_lsn"]), int(d["_zetl_seq"])))
    return batches, rows


class Zetl:
    """A zetl process with its own config and data dir."""

    running = set()  # started and not yet waited for: tearDown kills them (kill_all)

    @classmethod
    def kill_all(cls):
        """Kills every zetl a failed test left running, so its slot does not block others."""
        for z in list(cls.running):
            try:
                z.proc.kill()
                z.wait(30)
            except (OSError, AssertionError):
                cls.running.discard(z)

    def __init__(self, workdir, config_text):
        self.workdir = workdir
        self.config = os.path.join(workdir, "zetl.yaml")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.proc = None
        self.maxrss_kb = None
        self.stderr_path = os.path.join(workdir, "zetl.stderr")

    def start(self, *args, env=None):
        e = dict(os.environ)
        e.setdefault("ZETL_LOG_LEVEL", "info")
        if env:
            e.update(env)
        self.stderr_file = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([ZETL_BIN, "run", "--config", self.config, *args],
                                     cwd=self.workdir, env=e, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr_file)
        Zetl.running.add(self)
        return self.proc

    def wait(self, timeout=300):
        """Waits for exit, records peak RSS (ru_maxrss, KiB); returns the exit code."""
        deadline = time.time() + timeout
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid != 0:
                break
            if time.time() > deadline:
                self.proc.kill()
                os.wait4(self.proc.pid, 0)
                raise AssertionError(f"zetl did not exit within {timeout}s:\n{self.log()}")
            time.sleep(0.05)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        Zetl.running.discard(self)
        self.maxrss_kb = ru.ru_maxrss
        self.stderr_file.close()
        return self.proc.returncode

    def run_once(self, *args, timeout=300, env=None):
        self.start("--once", *args, env=env)
        return self.wait(timeout)

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        return self.wait()

    def log(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return ""


class SourceAndWarehouse(unittest.TestCase):
    """A source cluster and a warehouse cluster per test class; per test a work
    directory (self.work) and a database on each (self.db, self.whdb) named after it."""

    WORK_PREFIX = "zetl-"

    @classmethod
    def setUpClass(cls):
        cls.src = Cluster()
        cls.whc = Cluster(wal_level="replica")

    @classmethod
    def tearDownClass(cls):
        cls.src.destroy()
        cls.whc.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix=self.WORK_PREFIX)
        name = self.id().split(".")[-1].lower()[:40]
        self.db = self.src.createdb(name)
        self.whdb = self.whc.createdb(name)


def run_zetl(args, cwd=None, env=None, timeout=120):
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run([ZETL_BIN, *args], cwd=cwd, env=e, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def config(cluster, db, archive="archive", schemas=("tenant_*",), slot="zetl", extra="",
           buffer_extra="", slot_groups=1, dsn=None):
    sch = ", ".join(json.dumps(s) for s in schemas)
    return f"""source:
  dsn: "{dsn or cluster.dsn(db)}"
  tenants:
    schemas: [{sch}]
  slot: {slot}
  slot_groups: {slot_groups}
buffer:
  dir: ./zetl-data
  max_rows: 100000
  max_age_ms: 200
{buffer_extra}archive:
  url: file://./{archive}
{extra}"""


def main():
    if not os.path.exists(ZETL_BIN):
        print(f"zetl binary not found at {ZETL_BIN}", file=sys.stderr)
        sys.exit(1)
    unittest.main(verbosity=2)
