#!/usr/bin/env python3
"""zetl benchmark harness: seeded workloads against a throwaway PostgreSQL
cluster (or an existing server), measured with pg_recvlogical (the walsender's
own limit) and with zetl, on the same WAL in the same run.

Python 3 standard library only. Never linked into the daemon: it drives the
`zetl` binary, `psql`, `pg_recvlogical` and `pgbench` as processes.

Adding a workload: subclass Workload, decorate it with @workload. Adding a
measurement (end to end, lag, ...): subclass Measurement, decorate it with
@measurement; it gets a prepare() call before the workload is generated (create
its slot there) and a run() call per repetition afterwards.
"""

import argparse
import bisect
import csv
import datetime
import io
import json
import math
import mmap
import os
import platform
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PG_BIN = os.environ.get("ZETL_PG_BIN", "/usr/lib/postgresql/15/bin")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def pg_tool(name):
    path = os.path.join(PG_BIN, name)
    return path if os.path.exists(path) else (shutil.which(name) or name)


def as_pg_user(cmd):
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def qident(name):
    return '"' + name.replace('"', '""') + '"'


def qlit(text):
    return "'" + text.replace("'", "''") + "'"


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_text(value):
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


# --------------------------------------------------------------------------
# Sources: a throwaway local cluster, or an existing server (--source-dsn)
# --------------------------------------------------------------------------

class Source:
    """A PostgreSQL server reachable by a conninfo DSN."""

    dsn = None
    settings = {}

    def psql(self, sql, check=True, timeout=None):
        """Runs SQL (a script) in one session; returns rows as lists of strings."""
        p = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn, "-A", "-t",
             "-F", "\x1f", "-f", "-"],
            input=sql.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"psql failed: {p.stderr.decode(errors='replace')[:2000]}\n"
                               f"SQL: {sql[:1000]}")
        return [line.split("\x1f") for line in p.stdout.decode().splitlines() if line != ""]

    def value(self, sql):
        rows = self.psql(sql)
        return rows[0][0] if rows else None

    def current_lsn(self):
        # The insert position: pg_current_wal_lsn() is the write position, which
        # lags behind commits when synchronous_commit is off.
        return lsn_int(self.value("SELECT pg_current_wal_insert_lsn()"))

    def wait_flushed(self, lsn, timeout=60):
        """The walsender only sends flushed WAL (synchronous_commit may be off)."""
        deadline = time.time() + timeout
        while lsn_int(self.value("SELECT pg_current_wal_flush_lsn()")) < lsn:
            if time.time() > deadline:
                raise RuntimeError(f"WAL not flushed up to {lsn_text(lsn)} in {timeout}s")
            time.sleep(0.05)

    def describe(self):
        names = ["server_version", "wal_level", "max_wal_senders", "max_replication_slots",
                 "shared_buffers", "synchronous_commit", "fsync", "full_page_writes",
                 "wal_compression", "wal_buffers", "max_wal_size", "checkpoint_timeout",
                 "logical_decoding_work_mem", "wal_sender_timeout"]
        rows = self.psql("SELECT name, current_setting(name) FROM pg_settings "
                         "WHERE name IN (" + ",".join(qlit(n) for n in names) + ") ORDER BY 1")
        return {r[0]: r[1] for r in rows}

    def server_version_num(self):
        return int(self.value("SHOW server_version_num"))

    def close(self):
        pass


class LocalCluster(Source):
    """initdb in a temp dir as the postgres user, on a free 127.0.0.1 port; removed by close()."""

    CONF = {
        "wal_level": "logical",
        "max_wal_senders": "20",
        "max_replication_slots": "20",
        "shared_buffers": "256MB",
        "synchronous_commit": "off",
    }

    def __init__(self, keep=False, conf=None, dbname="bench", prefix="zetlbench-pg-"):
        self.keep = keep
        self.pid = None
        self.dir = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        subprocess.run(as_pg_user([pg_tool("initdb"), "-D", self.data, "-U", "postgres",
                                   "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        conf = dict(self.CONF if conf is None else conf)
        self.conf = dict(conf)
        conf.update({"listen_addresses": "'127.0.0.1'", "port": str(self.port),
                     "unix_socket_directories": f"'{self.dir}'",
                     "log_min_messages": "warning"})
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# zetl bench\n")
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                    "host replication postgres 127.0.0.1/32 trust\n")
        subprocess.run(as_pg_user([pg_tool("pg_ctl"), "-D", self.data, "-l",
                                   os.path.join(self.dir, "log"), "-w", "-t", "60", "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())
        self.dsn = f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"
        self.psql(f"CREATE DATABASE {qident(dbname)}")
        self.dsn = f"host=127.0.0.1 port={self.port} dbname={dbname} user=postgres"

    def close(self):
        if self.pid is not None:
            subprocess.run(as_pg_user([pg_tool("pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                                       "-t", "60", "stop"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                os.kill(self.pid, 0)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = None
        if self.keep:
            log(f"kept cluster directory {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class ExistingSource(Source):
    """A server the user points at with --source-dsn (Aurora, RDS, a local server).

    The bench creates only objects named with its own prefix (schemas, slots,
    publications) and drops them again at the end.
    """

    def __init__(self, dsn):
        self.dsn = dsn
        self.cleanup_sql = []

    def close(self):
        for sql in reversed(self.cleanup_sql):
            try:
                self.psql(sql, check=False, timeout=600)
            except Exception as e:  # cleanup must go on
                log(f"cleanup failed: {e}")


# --------------------------------------------------------------------------
# Timed child processes: wall clock, rusage (CPU, peak RSS), RSS over time
# --------------------------------------------------------------------------

GNU_TIME = "/usr/bin/time"


def child_pid(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None
    except OSError:
        return None


def run_timed(cmd, cwd=None, env=None, stdout_path=None, stderr_path=None, timeout=3600):
    """Runs cmd; returns wall/user/sys seconds, peak RSS (KiB) and RSS samples.

    Peak RSS comes from GNU time's %M, not from our own wait4(): a child that
    Python spawns inherits the spawning Python process's memory high-water
    mark into its ru_maxrss at exec (vfork/fork + exec), so wait4() would
    report max(harness, child). time(1) is small and forks the measured
    process itself, so its %M is the measured process's own peak. CPU (user +
    sys) comes from wait4() of time(1), which includes the child it reaped.
    """
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
    tfile = None
    full = list(cmd)
    if os.access(GNU_TIME, os.X_OK):
        fd, tfile = tempfile.mkstemp(prefix="zetlbench-time-")
        os.close(fd)
        full = [GNU_TIME, "-f", "%M", "-o", tfile, "--"] + full
    samples = []
    t0 = time.monotonic()
    proc = subprocess.Popen(full, cwd=cwd, env=env, stdout=out, stderr=err)
    stop = threading.Event()

    def sample():
        target = None
        while not stop.is_set():
            if target is None:
                target = child_pid(proc.pid) if tfile else proc.pid
            if target is not None:
                try:
                    with open(f"/proc/{target}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                samples.append((round(time.monotonic() - t0, 3),
                                                int(line.split()[1])))
                                break
                except OSError:
                    pass
            stop.wait(0.1 if target else 0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                kid = child_pid(proc.pid)
                if kid:
                    os.kill(kid, signal.SIGKILL)
                proc.kill()
                _, status, ru = os.wait4(proc.pid, 0)
                raise RuntimeError(f"{os.path.basename(cmd[0])} did not finish within "
                                   f"{timeout}s")
            time.sleep(0.002)
    finally:
        stop.set()
        sampler.join()
        for fobj in (out, err):
            if fobj is not subprocess.DEVNULL:
                fobj.close()
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_kb, source = ru.ru_maxrss, "wait4 ru_maxrss (may include the harness's own peak)"
    if tfile:
        try:
            with open(tfile) as f:
                lines = [l for l in f.read().split("\n") if l.strip()]
            peak_kb, source = int(lines[-1].split()[-1]), "GNU time %M"
        except (OSError, ValueError, IndexError):
            pass
        os.unlink(tfile)
    if samples:
        peak_kb = max(peak_kb, max(kb for _, kb in samples))
    return {
        "exit_code": proc.returncode,
        "wall_s": round(wall, 4),
        "user_s": round(ru.ru_utime, 4),
        "sys_s": round(ru.ru_stime, 4),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 4),
        "peak_rss_kb": peak_kb,
        "peak_rss_source": source,
        "rss_samples_kb": downsample(samples, 400),
    }


def downsample(samples, n):
    if len(samples) <= n:
        return samples
    step = len(samples) / n
    return [samples[int(i * step)] for i in range(n)] + [samples[-1]]


def tail(path, n=4000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


# --------------------------------------------------------------------------
# pgoutput reader for the baseline's output: counts the rows pg_recvlogical got
# --------------------------------------------------------------------------

def count_pgoutput(path):
    """Counts Insert/Update/Delete messages in a pg_recvlogical pgoutput file.

    pg_recvlogical writes each message's bytes followed by one '\\n'. Messages
    are self-delimiting, so the file is walked message by message (protocol
    versions 1-4, streaming on). Rows of streamed transactions count at Stream
    Commit; a Stream Abort drops the rows sent under that (sub)transaction xid.
    Returns {"I": n, "U": n, "D": n, "T": n, "txns": n}.
    """
    counts = {"I": 0, "U": 0, "D": 0, "T": 0, "txns": 0}
    size = os.path.getsize(path)
    if size == 0:
        return counts
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as b:
        u16 = struct.Struct(">H").unpack_from
        u32 = struct.Struct(">I").unpack_from
        pos, in_stream = 0, False
        pending = {}  # xid -> {"I":..,...} rows of streamed transactions

        def cstr(p):
            return b.find(b"\0", p) + 1

        def tuple_end(p):
            (ncols,) = u16(b, p)
            p += 2
            for _ in range(ncols):
                kind = b[p]
                p += 1
                if kind == 0x74 or kind == 0x62:  # 't', 'b'
                    (ln,) = u32(b, p)
                    p += 4 + ln
            return p

        def add(kind, xid):
            if in_stream:
                d = pending.setdefault(xid, {"I": 0, "U": 0, "D": 0, "T": 0})
                d[kind] += 1
            else:
                counts[kind] += 1

        while pos < size:
            m = b[pos]
            pos += 1
            xid = None
            if in_stream and m in b"RYIUDTM":
                (xid,) = u32(b, pos)
                pos += 4
            if m == 0x42:  # B: final_lsn, commit_ts, xid
                pos += 20
            elif m == 0x43:  # C: flags, commit_lsn, end_lsn, commit_ts
                pos += 25
                counts["txns"] += 1
            elif m == 0x49:  # I: relid, 'N', tuple
                pos = tuple_end(pos + 5)
                add("I", xid)
            elif m == 0x55:  # U: relid, ['K'|'O' tuple], 'N' tuple
                pos += 4
                if b[pos] in (0x4B, 0x4F):
                    pos = tuple_end(pos + 1)
                pos = tuple_end(pos + 1)
                add("U", xid)
            elif m == 0x44:  # D: relid, 'K'|'O', tuple
                pos = tuple_end(pos + 5)
                add("D", xid)
            elif m == 0x54:  # T: nrels, options, relids
                (n,) = u32(b, pos)
                pos += 5 + 4 * n
                add("T", xid)
            elif m == 0x52:  # R: relid, nspname, relname, replident, ncols, columns
                pos = cstr(cstr(pos + 4)) + 1
                (ncols,) = u16(b, pos)
                pos += 2
                for _ in range(ncols):
                    pos = cstr(pos + 1) + 8
            elif m == 0x59:  # Y: typoid, nspname, typname
                pos = cstr(cstr(pos + 4))
            elif m == 0x4F:  # O: lsn, name
                pos = cstr(pos + 8)
            elif m == 0x4D:  # M: flags, lsn, prefix, length, content
                pos = cstr(pos + 9)
                (n,) = u32(b, pos)
                pos += 4 + n
            elif m == 0x53:  # S: xid, first_segment
                pos += 5
                in_stream = True
            elif m == 0x45:  # E
                in_stream = False
            elif m == 0x63:  # c: xid, flags, commit_lsn, end_lsn, commit_ts
                (cx,) = u32(b, pos)
                pos += 29
                counts["txns"] += 1
                # Subtransactions' rows carry their own xid: a commit takes all
                # that were not aborted (streamed transactions do not overlap
                # in the bench workloads).
                for d in pending.values():
                    for k, v in d.items():
                        counts[k] += v
                pending.clear()
            elif m == 0x41:  # A: xid, subxid [, abort_lsn, abort_ts in v4]
                (ax, sx) = struct.unpack_from(">II", b, pos)
                pos += 8
                if pos < size and b[pos] != 0x0A:
                    pos += 16
                if sx == ax:
                    pending.clear()
                else:
                    pending.pop(sx, None)
            else:
                raise ValueError(f"{path}: unknown pgoutput message 0x{m:02x} at offset "
                                 f"{pos - 1}")
            if pos >= size or b[pos] != 0x0A:
                raise ValueError(f"{path}: message 0x{m:02x} not followed by a newline at "
                                 f"offset {pos}")
            pos += 1
    return counts


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------

WORKLOADS = {}


def workload(cls):
    WORKLOADS[cls.name] = cls
    return cls


def tenant_names(prefix, n):
    if n <= 26:
        return [prefix + chr(ord("a") + i) for i in range(n)]
    width = len(str(n))
    return [f"{prefix}{i + 1:0{width}d}" for i in range(n)]


class Workload:
    """A seeded, sized workload over tenant schemas.

    setup() runs before the slots exist (DDL, preloaded data: not measured);
    generate() runs after (its WAL is what both readers decode). Parameters
    come from the command line, falling back to the class's defaults.
    """

    name = None
    description = ""
    defaults = {}
    enables = ()  # measurement flags on by default for this workload ("e2e", "lag")

    def __init__(self, args, prefix):
        self.p = dict(self.defaults)
        for k in list(self.p):
            v = getattr(args, k, None)
            if v is not None:
                self.p[k] = v
        self.p["seed"] = args.seed
        self.schemas = tenant_names(prefix, self.p["tenants"])

    def params(self):
        return dict(self.p)

    def setup(self, src):
        raise NotImplementedError

    def generate(self, src, work):
        """Generates the workload; returns a dict (at least "rows_expected")."""
        raise NotImplementedError

    def seed_sql(self):
        # setseed() takes [-1, 1]; any integer seed maps to a fixed value.
        return f"SELECT setseed({(self.p['seed'] % 1000003) / 1000003.0!r});\n"


USERS_DDL = """CREATE SCHEMA {s};
CREATE TABLE {s}.users (id bigint PRIMARY KEY, email text NOT NULL, name text,
                        score numeric(10,2), created_at timestamptz NOT NULL);
"""

USERS_SELECT = """SELECT g, 'user' || g || '@{domain}.example.com',
       initcap(substr(md5(random()::text), 1, 4 + (random() * 24)::int)),
       round((random() * 99999)::numeric, 2),
       timestamptz '2024-01-01 00:00:00+00' + random() * interval '365 days'
FROM generate_series({lo}, {hi}) g"""


def split(total, parts):
    """total split into `parts` near-equal integers."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class InsertWorkload(Workload):
    """Inserts into tenant_X.users, in transactions of txn_rows rows.

    spread=True: every transaction inserts into every tenant; else each
    transaction goes to one tenant, round robin.
    """

    spread = True
    table_ddl = USERS_DDL

    def setup(self, src):
        src.psql("".join(self.table_ddl.format(s=qident(s)) for s in self.schemas))

    def insert_sql(self, schema, lo, hi):
        return (f"INSERT INTO {qident(schema)}.users "
                + USERS_SELECT.format(domain=schema.replace("'", ""), lo=lo, hi=hi) + ";\n")

    def generate(self, src, work):
        rows, txn_rows = self.p["rows"], max(1, self.p["txn_rows"])
        next_id = {s: 1 for s in self.schemas}
        parts = [self.seed_sql()]
        done, t = 0, 0
        while done < rows:
            n = min(txn_rows, rows - done)
            targets = ([(s, k) for s, k in zip(self.schemas, split(n, len(self.schemas))) if k]
                       if self.spread else [(self.schemas[t % len(self.schemas)], n)])
            parts.append("BEGIN;\n")
            for s, k in targets:
                parts.append(self.insert_sql(s, next_id[s], next_id[s] + k - 1))
                next_id[s] += k
            parts.append("COMMIT;\n")
            done += n
            t += 1
        src.psql("".join(parts), timeout=self.p.get("timeout", 86400))
        return {"rows_expected": rows, "transactions": t}


@workload
class Insert1M(InsertWorkload):
    name = "insert-1m"
    description = "1,000,000 inserts over 3 tenant schemas in 10 transactions of 100,000 rows"
    defaults = {"rows": 1_000_000, "tenants": 3, "txn_rows": 100_000}
    enables = ("e2e",)


@workload
class BigTxn(InsertWorkload):
    name = "big-txn"
    description = ("one transaction of 5,000,000 inserts over 3 tenants (streamed by the "
                   "walsender; memory must stay flat)")
    defaults = {"rows": 5_000_000, "tenants": 3, "txn_rows": None}

    def generate(self, src, work):
        self.p["txn_rows"] = self.p["txn_rows"] or self.p["rows"]
        return super().generate(src, work)


@workload
class ManyTenants(InsertWorkload):
    name = "many-tenants"
    description = "200 tenant schemas, small transactions (10 rows, one tenant each)"
    defaults = {"rows": 200_000, "tenants": 200, "txn_rows": 10}
    spread = False


WIDE_TEXT, WIDE_NUM, WIDE_INT, WIDE_BOOL, WIDE_TS = 20, 20, 4, 2, 3  # + id = 50 columns


@workload
class Wide(InsertWorkload):
    name = "wide"
    description = ("50 columns (20 text of 8-72 bytes, 20 numeric(18,4), 4 int, 2 bool, "
                   "3 timestamptz), for bytes/s")
    defaults = {"rows": 200_000, "tenants": 3, "txn_rows": 10_000}

    def setup(self, src):
        cols = (["id bigint PRIMARY KEY"]
                + [f"t{i:02d} text" for i in range(1, WIDE_TEXT + 1)]
                + [f"n{i:02d} numeric(18,4)" for i in range(1, WIDE_NUM + 1)]
                + [f"i{i:02d} integer" for i in range(1, WIDE_INT + 1)]
                + [f"b{i:02d} boolean" for i in range(1, WIDE_BOOL + 1)]
                + [f"ts{i:02d} timestamptz" for i in range(1, WIDE_TS + 1)])
        src.psql("".join(f"CREATE SCHEMA {qident(s)};\nCREATE TABLE {qident(s)}.wide_events ("
                         + ", ".join(cols) + ");\n" for s in self.schemas))

    def insert_sql(self, schema, lo, hi):
        exprs = (["g"]
                 + ["substr(md5(random()::text) || md5(random()::text) || md5(random()::text),"
                    " 1, 8 + (random() * 64)::int)"] * WIDE_TEXT
                 + ["round((random() * 1e9)::numeric, 4)"] * WIDE_NUM
                 + ["(random() * 2e9)::bigint::int - 1000000000"] * WIDE_INT
                 + ["random() < 0.5"] * WIDE_BOOL
                 + ["timestamptz '2024-01-01 00:00:00+00' + random() * interval '365 days'"]
                 * WIDE_TS)
        return (f"INSERT INTO {qident(schema)}.wide_events SELECT " + ", ".join(exprs)
                + f" FROM generate_series({lo}, {hi}) g;\n")


@workload
class Mixed(Workload):
    name = "mixed"
    description = ("60/30/10 insert/update/delete in small transactions over 3 tenants at a "
                   "fixed target rate")
    defaults = {"rows": None, "tenants": 3, "txn_rows": 10, "rate": 5000, "duration": 30,
                "preload": 10_000}

    def setup(self, src):
        parts = [self.seed_sql()]
        for s in self.schemas:
            parts.append(USERS_DDL.format(s=qident(s)))
            parts.append(f"INSERT INTO {qident(s)}.users "
                         + USERS_SELECT.format(domain=s.replace("'", ""), lo=1,
                                               hi=self.p["preload"]) + ";\n")
        src.psql("".join(parts))

    def generate(self, src, work):
        if not self.p["rows"] and not self.p["rate"]:
            raise RuntimeError(f"{self.name}: --rate 0 (unpaced) needs --rows")
        rows = self.p["rows"] or int(self.p["rate"] * self.p["duration"])
        self.p["rows"] = rows
        arr = "ARRAY[" + ",".join(qlit(s) for s in self.schemas) + "]::text[]"
        # One session, paced server-side: after each COMMIT it sleeps until
        # rows_done / rate seconds have passed. Updates and deletes pick an
        # existing row (the first id at or above a random one), so every
        # operation changes exactly one row.
        sql = self.seed_sql() + f"""
DO $bench$
DECLARE
  schemas text[] := {arr};
  nt int := {len(self.schemas)};
  next_id bigint[] := array_fill({self.p['preload'] + 1}::bigint, ARRAY[{len(self.schemas)}]);
  total bigint := {rows};
  txn_rows int := {max(1, self.p['txn_rows'])};
  rate float8 := {float(self.p['rate'])};
  t0 timestamptz := clock_timestamp();
  done bigint := 0;
  ti int; r float8; target bigint; ahead float8; victim bigint;
BEGIN
  WHILE done < total LOOP
    FOR k IN 1 .. least(txn_rows, total - done) LOOP
      ti := 1 + floor(random() * nt)::int;
      r := random();
      IF r < 0.6 THEN
        EXECUTE format('INSERT INTO %I.users VALUES ($1, $2, $3, $4, $5)', schemas[ti])
          USING next_id[ti], 'user' || next_id[ti] || '@example.com',
                initcap(substr(md5(random()::text), 1, 4 + (random() * 24)::int)),
                round((random() * 99999)::numeric, 2),
                timestamptz '2024-01-01 00:00:00+00' + random() * interval '365 days';
        next_id[ti] := next_id[ti] + 1;
      ELSE
        target := 1 + floor(random() * (next_id[ti] - 1))::bigint;
        EXECUTE format('SELECT coalesce((SELECT min(id) FROM %1$I.users WHERE id >= $1),
                                        (SELECT max(id) FROM %1$I.users))', schemas[ti])
          INTO victim USING target;
        IF r < 0.9 THEN
          EXECUTE format('UPDATE %I.users SET score = $2, name = $3 WHERE id = $1', schemas[ti])
            USING victim, round((random() * 99999)::numeric, 2),
                  initcap(substr(md5(random()::text), 1, 4 + (random() * 24)::int));
        ELSE
          EXECUTE format('DELETE FROM %I.users WHERE id = $1', schemas[ti]) USING victim;
        END IF;
      END IF;
    END LOOP;
    done := least(total, done + txn_rows);
    COMMIT;
    IF rate > 0 THEN  -- rate 0: as fast as the server goes
      ahead := done / rate - extract(epoch FROM clock_timestamp() - t0);
      IF ahead > 0 THEN
        PERFORM pg_sleep(ahead);
      END IF;
    END IF;
  END LOOP;
END
$bench$;
"""
        src.psql(sql)
        return {"rows_expected": rows,
                "transactions": math.ceil(rows / max(1, self.p["txn_rows"]))}


@workload
class MixedMax(Mixed):
    name = "mixed-max"
    description = ("mixed at full speed (no rate limit): 300,000 row changes, 60/30/10 "
                   "insert/update/delete in 10-row transactions over 3 tenants; end to end on")
    defaults = dict(Mixed.defaults, rows=300_000, rate=0)
    enables = ("e2e",)


@workload
class MixedLag(Mixed):
    name = "mixed-lag"
    description = ("mixed at a steady 5,000 rows/s for 60 s with zetl running as a daemon "
                   "into the warehouse: commit-to-warehouse lag")
    defaults = dict(Mixed.defaults, rate=5000, duration=60)
    enables = ("lag",)


@workload
class PgBench(Workload):
    name = "pgbench"
    description = ("pgbench -i per tenant schema, then a timed TPC-B-like run per schema "
                   "(all schemas at once; custom script with schema-qualified tables)")
    defaults = {"tenants": 3, "scale": 1, "duration": 30, "clients": 1, "rows": None}

    def setup(self, src):
        for s in self.schemas:
            src.psql(f"CREATE SCHEMA {qident(s)};")
            env = dict(os.environ)
            env["PGOPTIONS"] = "-c search_path=" + qident(s).replace(" ", "\\ ")
            subprocess.run(["pgbench", "-i", "-q", "-s", str(self.p["scale"]), src.dsn],
                           env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)

    def generate(self, src, work):
        procs = []
        for i, s in enumerate(self.schemas):
            q = qident(s)
            script = os.path.join(work, f"pgbench-{i}.sql")
            with open(script, "w") as f:
                f.write(f"""\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE {q}.pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM {q}.pgbench_accounts WHERE aid = :aid;
UPDATE {q}.pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE {q}.pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO {q}.pgbench_history (tid, bid, aid, delta, mtime)
  VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
""")
            cmd = ["pgbench", "-n", "-f", script, "-D", f"scale={self.p['scale']}",
                   "-c", str(self.p["clients"]), "-j", "1",
                   f"--random-seed={self.p['seed'] + i}"]
            if self.p["rows"]:  # 4 row changes per transaction
                per = max(1, math.ceil(self.p["rows"] / (4 * len(self.schemas)
                                                          * self.p["clients"])))
                cmd += ["-t", str(per)]
            else:
                cmd += ["-T", str(self.p["duration"])]
            procs.append(subprocess.Popen(cmd + [src.dsn], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
        tps = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"pgbench failed: {err.decode(errors='replace')[-2000:]}")
            for line in out.decode().splitlines():
                if line.startswith("tps ="):
                    tps.append(float(line.split()[2]))
        return {"rows_expected": None, "pgbench_tps_per_schema": tps}


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------

MEASUREMENTS = []


def measurement(cls):
    MEASUREMENTS.append(cls)
    return cls


class Measurement:
    """One reader of the workload's WAL. prepare() before generation, run() after.

    run() returns a dict with at least wall_s and rows; "best" is the run with
    the lowest wall_s.
    """

    name = None
    label = None
    enabled_by = None  # an args attribute (or a tuple of them) that must be true; None = always
    needs_warehouse = False
    live = False  # live_start() before the workload is generated, live_finish() after

    def __init__(self, bench):
        self.b = bench

    @classmethod
    def enabled(cls, args, wl):
        """A flag is on when given (--e2e), or, when not given, if the workload
        turns it on by default (Workload.enables)."""
        if cls.enabled_by is None:
            return True
        names = cls.enabled_by if isinstance(cls.enabled_by, tuple) else (cls.enabled_by,)
        for n in names:
            v = getattr(args, n, None)
            if not (v or (v is None and n in wl.enables)):
                return False
        return True

    def prepare(self, rep):
        pass

    def run(self, rep):
        raise NotImplementedError

    def close(self):
        """Called once at the end of the workload, also after a failure or an
        interrupt: stop whatever the measurement started (a server, ...)."""

    @staticmethod
    def summarize(runs, b):
        best = min(runs, key=lambda r: r["wall_s"])
        return dict(best)

    prepare_rank = 1  # lower prepares first (zetl makes the publication others read)


def rates(r, b):
    """Derived per-run rates shared by every measurement."""
    wall = r["wall_s"]
    r["rows_per_s"] = round(r["rows"] / wall, 1) if wall > 0 else None
    r["wal_mb_per_s"] = round(b.wal_bytes / 1e6 / wall, 2) if wall > 0 else None
    if "cpu_s" in r and r["rows"]:
        r["cpu_s_per_million_rows"] = round(r["cpu_s"] / r["rows"] * 1e6, 3)
    r["peak_rss_mb"] = round(r["peak_rss_kb"] / 1024, 1)
    return r


@measurement
class Baseline(Measurement):
    """pg_recvlogical writing raw pgoutput for the same slot options as zetl.

    end_lsn is pg_current_wal_insert_lsn() after the workload (not
    pg_current_wal_lsn(), the write position, which lags behind commits when
    synchronous_commit is off). --endpos is end_lsn + 1 so that a commit ending
    exactly at end_lsn is still taken; a marker record written after end_lsn
    lets the walsender's keepalive pass endpos. Rows are counted in the output,
    so a baseline that stopped early would show up as a row mismatch.
    """

    name = "baseline"
    label = "pg_recvlogical"

    def slot(self, rep):
        return f"{self.b.prefix_objects}baseline_{rep}"

    def prepare(self, rep):
        s = self.slot(rep)
        self.b.src.psql(f"SELECT pg_create_logical_replication_slot({qlit(s)}, 'pgoutput')")
        self.b.on_cleanup(f"SELECT pg_drop_replication_slot({qlit(s)})")

    def run(self, rep):
        out = os.path.join(self.b.work, f"baseline-{rep}.pgoutput")
        cmd = [pg_tool("pg_recvlogical"), "-d", self.b.src.dsn, "--slot", self.slot(rep),
               "--start", "--no-loop", "-v", "--endpos", lsn_text(self.b.end_lsn + 1), "-f", out,
               "-o", f"proto_version={self.b.proto_version}",
               "-o", f"publication_names={self.b.publication}"]
        if self.b.args.baseline_streaming and self.b.proto_version >= 2:
            cmd += ["-o", "streaming=on"]
        stderr = os.path.join(self.b.work, f"baseline-{rep}.stderr")
        r = run_timed(cmd, stderr_path=stderr, timeout=self.b.args.timeout)
        if r["exit_code"] != 0:
            raise RuntimeError(f"pg_recvlogical exited {r['exit_code']}:\n{tail(stderr)}")
        r["output_bytes"] = os.path.getsize(out)
        try:
            c = count_pgoutput(out)
            r["rows"] = c["I"] + c["U"] + c["D"] + c["T"]
            r["rows_by_op"] = c
            r["rows_source"] = "decoded from the pgoutput file"
        except ValueError as e:
            log(f"could not count rows in the baseline output ({e}); using the workload's")
            r["rows"] = self.b.rows
            r["rows_source"] = "workload (pgoutput file not decodable)"
        r["output_mb_per_s"] = round(r["output_bytes"] / 1e6 / r["wall_s"], 2)
        r["options"] = {"endpos": lsn_text(self.b.end_lsn + 1),
                        "proto_version": self.b.proto_version,
                        "publication_names": self.b.publication,
                        "streaming": "on" if "streaming=on" in cmd else "off"}
        if not self.b.args.keep:
            os.unlink(out)
        return rates(r, self.b)


@measurement
class BaselineDevNull(Baseline):
    """pg_recvlogical writing to /dev/null: the walsender + libpq receive path
    without pg_recvlogical's two write(2) calls per message to a real file,
    which on small machines make the file baseline client-bound. Same slot
    options; the rows are those the file baseline decoded in the same WAL.
    """

    name = "baseline_devnull"
    label = "pg_recvlogical > /dev/null"

    def slot(self, rep):
        return f"{self.b.prefix_objects}devnull_{rep}"

    def run(self, rep):
        cmd = [pg_tool("pg_recvlogical"), "-d", self.b.src.dsn, "--slot", self.slot(rep),
               "--start", "--no-loop", "--endpos", lsn_text(self.b.end_lsn + 1),
               "-f", "/dev/null", "-o", f"proto_version={self.b.proto_version}",
               "-o", f"publication_names={self.b.publication}"]
        if self.b.args.baseline_streaming and self.b.proto_version >= 2:
            cmd += ["-o", "streaming=on"]
        stderr = os.path.join(self.b.work, f"devnull-{rep}.stderr")
        r = run_timed(cmd, stderr_path=stderr, timeout=self.b.args.timeout)
        if r["exit_code"] != 0:
            raise RuntimeError(f"pg_recvlogical exited {r['exit_code']}:\n{tail(stderr)}")
        done = [x for x in self.b.runs.get("baseline", []) if x["repetition"] == rep]
        r["rows"] = done[0]["rows"] if done else self.b.rows
        r["rows_source"] = "the file baseline's decoded rows (same WAL, same options)"
        return rates(r, self.b)


def archive_stats(root):
    """Sums over every sealed batch (<hex16>-<hex16>) of every stream under root."""
    s = {"batches": 0, "rows": 0, "raw_bytes": 0, "file_bytes": 0, "archive_bytes": 0,
         "transactions": 0}
    if not os.path.isdir(root):
        return s
    for stream in sorted(os.listdir(root)):
        sdir = os.path.join(root, stream)
        if not os.path.isdir(sdir):
            continue
        for name in sorted(os.listdir(sdir)):
            parts = name.split("-")
            if len(parts) != 2 or not all(len(p) == 16 for p in parts):
                continue
            bdir = os.path.join(sdir, name)
            with open(os.path.join(bdir, "manifest.json")) as f:
                man = json.load(f)
            s["batches"] += 1
            s["rows"] += man["rows"]
            s["raw_bytes"] += man["raw_bytes"]
            s["transactions"] += man.get("transactions", 0)
            s["file_bytes"] += sum(fi["bytes"] for fi in man["files"])
            s["archive_bytes"] += sum(os.path.getsize(os.path.join(bdir, x))
                                      for x in os.listdir(bdir))
    return s


@measurement
class ZetlCapture(Measurement):
    """zetl run --once: decode + transform + CSV + zstd + archive (file://)."""

    name = "zetl"
    label = "zetl capture"
    prepare_rank = 0

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}zetl{rep}"

    def workdir(self, rep):
        return os.path.join(self.b.work, f"zetl-{rep}")

    def config_text(self, rep):
        globs = ", ".join(json.dumps(self.b.prefix_schemas + "*") for _ in [0])
        return f"""# written by bench/zetlbench.py; source.dsn comes from ZETL_SOURCE_DSN
source:
  tenants:
    schemas: [{globs}]
  slot: {self.slot_prefix(rep)}
  slot_groups: 1
buffer:
  dir: ./zetl-data
archive:
  url: file://./archive
"""

    def env(self):
        env = dict(os.environ)
        env["ZETL_SOURCE_DSN"] = self.b.src.dsn
        return env

    def zetl(self, rep, cmd_prefix=(), tag="run"):
        wd = self.workdir(rep)
        env = self.env()
        stderr = os.path.join(wd, f"zetl-{tag}.stderr")
        r = run_timed(list(cmd_prefix) + [self.b.zetl_bin, "run", "--once", "--config",
                                          os.path.join(wd, "zetl.yaml")],
                      cwd=wd, env=env, stderr_path=stderr, timeout=self.b.args.timeout)
        if r["exit_code"] != 0:
            raise RuntimeError(f"zetl ({tag}) exited {r['exit_code']}:\n{tail(stderr)}")
        return r

    def prepare(self, rep):
        wd = self.workdir(rep)
        os.makedirs(wd, exist_ok=True)
        with open(os.path.join(wd, "zetl.yaml"), "w") as f:
            f.write(self.config_text(rep))
        # zetl creates its slot and publication itself, on the empty tenant tables.
        self.zetl(rep, tag="setup")
        name = f"{self.slot_prefix(rep)}_0"
        self.b.on_cleanup(f"SELECT pg_drop_replication_slot({qlit(name)}) "
                          f"FROM pg_replication_slots WHERE slot_name = {qlit(name)}")
        self.b.on_cleanup(f"DROP PUBLICATION IF EXISTS {qident(name)}")
        if self.b.publication is None:
            self.b.publication = name
        before = archive_stats(os.path.join(wd, "archive"))
        if before["rows"]:
            raise RuntimeError(f"zetl setup run archived {before['rows']} rows: the tenant "
                               "tables were not empty")

    def run(self, rep):
        r = self.zetl(rep)
        a = archive_stats(os.path.join(self.workdir(rep), "archive"))
        r.update(a)
        r["raw_mb_per_s"] = round(a["raw_bytes"] / 1e6 / r["wall_s"], 2)
        r["compressed_bytes_per_row"] = round(a["file_bytes"] / a["rows"], 2) if a["rows"] else None
        r["archive_bytes_per_row"] = round(a["archive_bytes"] / a["rows"], 2) if a["rows"] else None
        if not self.b.args.keep:
            shutil.rmtree(os.path.join(self.workdir(rep), "archive"), ignore_errors=True)
        return rates(r, self.b)


REPO = os.path.dirname(HERE)
S3_BUCKET = "bench"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def s3_archive_stats(s3, prefix):
    """archive_stats() for an S3 archive: sums over every complete batch (one whose
    manifest.json is stored) under prefix, read back from the store."""
    s = {"batches": 0, "rows": 0, "raw_bytes": 0, "file_bytes": 0, "archive_bytes": 0,
         "transactions": 0, "objects": 0, "incomplete_batches": 0}
    keys = s3.list(prefix + "/")
    batches = {}
    for key, size in keys.items():
        rest = key[len(prefix) + 1:].split("/")
        if len(rest) != 3:
            continue
        parts = rest[1].split("-")
        if len(parts) != 2 or not all(len(p) == 16 for p in parts):
            continue
        batches.setdefault("/".join(rest[:2]), {})[rest[2]] = size
    for bdir, objs in sorted(batches.items()):
        if "manifest.json" not in objs:
            s["incomplete_batches"] += 1
            continue
        man = json.loads(s3.get(f"{prefix}/{bdir}/manifest.json"))
        s["batches"] += 1
        s["rows"] += man["rows"]
        s["raw_bytes"] += man["raw_bytes"]
        s["transactions"] += man.get("transactions", 0)
        s["file_bytes"] += sum(fi["bytes"] for fi in man["files"])
        missing = [fi["file"] for fi in man["files"] if objs.get(fi["file"]) != fi["bytes"]]
        if missing:
            raise RuntimeError(f"S3 batch {bdir}: manifest.json lists {missing[:3]} but the "
                               "store does not hold them at that size")
        s["archive_bytes"] += sum(objs.values())
        s["objects"] += len(objs)
    return s


@measurement
class ZetlS3Capture(ZetlCapture):
    """--s3: zetl run --once archiving to S3 (s3rver on loopback) instead of file://;
    its own slot over the same WAL, run right after the file-archive zetl run of
    the same repetition. Rows come from the manifest.json objects read back from
    the store."""

    name = "zetl_s3"
    label = "zetl capture, S3 archive (s3rver)"
    enabled_by = "s3"
    prepare_rank = 0
    s3 = None

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}zs3{rep}"

    def workdir(self, rep):
        return os.path.join(self.b.work, f"zs3-{rep}")

    def archive_prefix(self, rep):
        return f"run{rep}"

    def config_text(self, rep):
        text = super().config_text(rep)
        old = "  url: file://./archive\n"
        assert old in text
        return text.replace(old, f"  url: s3://{S3_BUCKET}/{self.archive_prefix(rep)}\n"
                                 f"  s3:\n    endpoint: {self.s3.endpoint}\n"
                                 f"    region: us-east-1\n")

    def env(self):
        env = super().env()
        for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.pop(k, None)
        env["AWS_ACCESS_KEY_ID"] = "S3RVER"  # s3rver's built-in key pair
        env["AWS_SECRET_ACCESS_KEY"] = "S3RVER"
        return env

    def prepare(self, rep):
        if self.s3 is None:
            self.s3 = S3rverProcess(S3_BUCKET, keep=self.b.args.keep)
            log(f"s3rver on {self.s3.endpoint} (pid {self.s3.proc.pid}), store {self.s3.dir}")
        super().prepare(rep)
        before = s3_archive_stats(self.s3, self.archive_prefix(rep))
        if before["rows"]:
            raise RuntimeError(f"zetl setup run archived {before['rows']} rows to S3: the "
                               "tenant tables were not empty")

    def run(self, rep):
        cpu0 = self.s3.cpu_s()
        r = self.zetl(rep)
        r["s3rver_cpu_s"] = round(self.s3.cpu_s() - cpu0, 3)
        a = s3_archive_stats(self.s3, self.archive_prefix(rep))
        if a["incomplete_batches"]:
            raise RuntimeError(f"S3 archive run{rep}: {a['incomplete_batches']} batch(es) "
                               "without manifest.json after zetl run --once exited 0")
        r.update(a)
        r["raw_mb_per_s"] = round(a["raw_bytes"] / 1e6 / r["wall_s"], 2)
        r["compressed_bytes_per_row"] = round(a["file_bytes"] / a["rows"], 2) if a["rows"] else None
        r["archive_bytes_per_row"] = round(a["archive_bytes"] / a["rows"], 2) if a["rows"] else None
        r["rows_source"] = "manifest.json objects read back from s3rver (ListObjectsV2 + GET)"
        r["endpoint"] = self.s3.endpoint
        r["archive_url"] = f"s3://{S3_BUCKET}/{self.archive_prefix(rep)}"
        r = rates(r, self.b)
        same = [x for x in self.b.runs.get("zetl", []) if x["repetition"] == rep]
        if same and same[0].get("rows_per_s") and r["rows_per_s"]:
            r["ratio_vs_file_same_rep"] = round(r["rows_per_s"] / same[0]["rows_per_s"], 3)
        return r

    def close(self):
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None


@measurement
class ZetlPerf(ZetlCapture):
    """--perf: one extra zetl run under `perf record -g`; a hot-spot report, not a figure."""

    name = "zetl_perf"
    label = "zetl under perf"
    enabled_by = "perf"

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}zperf{rep}"

    def workdir(self, rep):
        return os.path.join(self.b.work, f"zperf-{rep}")

    def prepare(self, rep):
        if rep == 1:
            super().prepare(rep)

    def run(self, rep):
        if rep != 1:
            return None
        data = os.path.join(self.workdir(rep), "perf.data")
        r = self.zetl(rep, cmd_prefix=["perf", "record", "-g", "-F", "999", "-o", data, "--"],
                      tag="perf")
        path = os.path.join(self.b.results, f"{self.b.wl.name}.perf.txt")
        perf_report(data, path)
        return {"wall_s": r["wall_s"], "rows": 0, "report": os.path.relpath(path, HERE)}

    @staticmethod
    def summarize(runs, b):
        return runs[0]


def perf_report(data, path):
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                             "--sort", "symbol,dso", "--percent-limit", "0.5", "-g", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    by_dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                             "--sort", "dso", "-g", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    with open(path, "wb") as f:
        f.write(b"# self time by shared object\n" + by_dso.stdout
                + b"\n# self time by symbol (>= 0.5%)\n" + report.stdout)
    log(f"perf report written to {path}")


# --------------------------------------------------------------------------
# End to end: a PostgreSQL warehouse, zetl applying to it, bare COPY, lag
# --------------------------------------------------------------------------

# The warehouse cluster: PostgreSQL's defaults (wal_level replica, synchronous_commit
# on, fsync on) with the source's shared_buffers, plus two observers:
# track_commit_timestamp (exact commit time of each apply transaction, for lag) and
# pg_stat_statements (where the warehouse's time goes).
WAREHOUSE_CONF = {
    "shared_buffers": "256MB",
    "track_commit_timestamp": "on",
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "all",
}
# Added to the source cluster when the warehouse is a database in it (--warehouse database).
SAME_CLUSTER_EXTRA = {
    "track_commit_timestamp": "on",
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "all",
}

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_ticks(pid, children=True):
    """utime+stime+cutime+cstime of pid (cutime: its reaped children's CPU)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return 0
    fields = data[data.rindex(")") + 2:].split()
    return sum(int(x) for x in fields[11:15 if children else 13])


def cluster_cpu_s(postmaster_pid):
    """CPU seconds used so far by a PostgreSQL cluster: the postmaster, every live child
    (backends, walsenders, checkpointer, ...) and, through the postmaster's cutime and
    cstime, every child it has already reaped. Deltas of this are exact up to a child
    that exits between the two reads of one sample (one backend's CPU, at most)."""
    if postmaster_pid is None:
        return None
    total = proc_cpu_ticks(postmaster_pid)
    try:
        with open(f"/proc/{postmaster_pid}/task/{postmaster_pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        kids = []
    for k in kids:
        total += proc_cpu_ticks(k)
    return total / CLK_TCK


class DsnServer(Source):
    def __init__(self, dsn):
        self.dsn = dsn


class Warehouse:
    """The PostgreSQL warehouse zetl applies to, and the bare-COPY baseline loads into.

    mode "cluster": a second throwaway cluster (the default); "database": a database
    `warehouse` in the source's throwaway cluster; "external": --warehouse-dsn.
    """

    def __init__(self, args, bench):
        self.mode = "external" if args.warehouse_dsn else args.warehouse
        self.cluster = None
        self.cleanup = []
        if self.mode == "external":
            self.server = DsnServer(args.warehouse_dsn)
            self.pm_pid = None
            self.server_files = False
        elif self.mode == "database":
            src = bench.src
            src.psql("CREATE DATABASE warehouse")
            self.server = DsnServer(src.dsn.replace("dbname=bench", "dbname=warehouse"))
            # The source cluster runs synchronous_commit=off; a warehouse commit should
            # be durable before zetl lets the slot move on, as in a separate cluster.
            src.psql("ALTER DATABASE warehouse SET synchronous_commit = on")
            self.pm_pid = src.pid
            self.server_files = True
        else:
            conf = dict(WAREHOUSE_CONF)
            if args.warehouse_explain is not None:
                # Diagnostics only (adds timing overhead): plans of slow statements, with
                # actual rows, sort methods and buffers, to results/<w>.warehouse-plans.log.
                conf.update({"shared_preload_libraries": "'pg_stat_statements,auto_explain'",
                             "auto_explain.log_min_duration": str(args.warehouse_explain),
                             "auto_explain.log_analyze": "on",
                             "auto_explain.log_buffers": "on",
                             "auto_explain.log_nested_statements": "on"})
            self.cluster = LocalCluster(keep=args.keep, conf=conf, dbname="warehouse",
                                        prefix="zetlbench-wh-")
            self.server = self.cluster
            self.pm_pid = self.cluster.pid
            self.server_files = True
        self.dsn = self.server.dsn
        self.stats = bool(self.server.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; "
                                           "SELECT 1 FROM pg_settings WHERE name = "
                                           "'shared_preload_libraries' AND setting LIKE "
                                           "'%pg_stat_statements%'", check=False))
        self.commit_ts = self.server.value("SHOW track_commit_timestamp") == "on"

    def psql(self, sql, check=True, timeout=None):
        return self.server.psql(sql, check=check, timeout=timeout)

    def value(self, sql):
        return self.server.value(sql)

    def cpu_s(self):
        return cluster_cpu_s(self.pm_pid)

    def before_run(self):
        """Same starting point for every timed run: a checkpoint, fresh statement stats."""
        self.psql("CHECKPOINT", check=self.mode != "external")
        if self.stats:
            self.psql("SELECT pg_stat_statements_reset()", check=False)

    def top_statements(self, n=12):
        """pg_stat_statements since before_run(), summed over statements that differ only
        in the name of zetl's per-batch staging table (_zetl_stage_<n>), slowest first."""
        if not self.stats:
            return []
        rows = self.psql(
            "SELECT calls, total_exec_time, rows, shared_blks_hit + shared_blks_read, "
            "wal_bytes, regexp_replace(regexp_replace(left(query, 600), '\\s+', ' ', 'g'), "
            "'_zetl_stage_[0-9]+', '_zetl_stage_N', 'g') FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            check=False)
        agg = {}
        for calls, total, nrows, blks, wal, q in rows:
            a = agg.setdefault(q, {"calls": 0, "total_ms": 0.0, "rows": 0, "blocks": 0,
                                   "wal_bytes": 0, "query": q})
            a["calls"] += int(calls)
            a["total_ms"] += float(total)
            a["rows"] += int(nrows)
            a["blocks"] += int(blks)
            a["wal_bytes"] += int(float(wal or 0))
        out = sorted(agg.values(), key=lambda a: -a["total_ms"])[:n]
        for a in out:
            a["total_ms"] = round(a["total_ms"], 1)
            a["mean_ms"] = round(a["total_ms"] / a["calls"], 2) if a["calls"] else None
        return out

    def describe(self):
        d = {"mode": self.mode,
             "settings": self.server.describe() if hasattr(self.server, "describe") else {}}
        if self.cluster is not None:
            d["configured"] = dict(WAREHOUSE_CONF)
        d["track_commit_timestamp"] = self.commit_ts
        d["pg_stat_statements"] = self.stats
        return d

    def close(self, plans_path=None):
        for sql in reversed(self.cleanup):
            self.psql(sql, check=False, timeout=600)
        if plans_path and self.cluster is not None:
            shutil.copyfile(os.path.join(self.cluster.dir, "log"), plans_path)
            log(f"warehouse server log with auto_explain plans: {plans_path}")
        if self.cluster is not None:
            self.cluster.close()


class TimedProcess:
    """A long-running process (zetl run as a daemon) under GNU time: started and
    stopped by the caller; the same figures as run_timed()."""

    def __init__(self, cmd, cwd=None, env=None, stderr_path=None):
        self.err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.tfile = None
        full = list(cmd)
        if os.access(GNU_TIME, os.X_OK):
            fd, self.tfile = tempfile.mkstemp(prefix="zetlbench-time-")
            os.close(fd)
            full = [GNU_TIME, "-f", "%M", "-o", self.tfile, "--"] + full
        self.samples = []
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(full, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.err)
        self.stop_ev = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def target(self):
        return child_pid(self.proc.pid) if self.tfile else self.proc.pid

    def _sample(self):
        target = None
        while not self.stop_ev.is_set():
            if target is None:
                target = self.target()
            if target is not None:
                try:
                    with open(f"/proc/{target}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                self.samples.append((round(time.monotonic() - self.t0, 3),
                                                     int(line.split()[1])))
                                break
                except OSError:
                    pass
            self.stop_ev.wait(0.1 if target else 0.005)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=120):
        kid = self.target()
        if kid and self.proc.poll() is None:
            os.kill(kid, sig)
        t = time.monotonic()
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t > timeout:
                kid = self.target()
                if kid:
                    os.kill(kid, signal.SIGKILL)
                _, status, ru = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.01)
        self.stop_ev.set()
        self.sampler.join()
        if self.err is not subprocess.DEVNULL:
            self.err.close()
        peak = ru.ru_maxrss
        if self.tfile:
            try:
                with open(self.tfile) as f:
                    lines = [l for l in f.read().split("\n") if l.strip()]
                peak = int(lines[-1].split()[-1])
            except (OSError, ValueError, IndexError):
                pass
            os.unlink(self.tfile)
        if self.samples:
            peak = max(peak, max(kb for _, kb in self.samples))
        return {"exit_code": os.waitstatus_to_exitcode(status),
                "wall_s": round(time.monotonic() - self.t0, 4),
                "user_s": round(ru.ru_utime, 4), "sys_s": round(ru.ru_stime, 4),
                "cpu_s": round(ru.ru_utime + ru.ru_stime, 4), "peak_rss_kb": peak,
                "peak_rss_source": "GNU time %M" if self.tfile else "wait4 ru_maxrss",
                "rss_samples_kb": downsample(self.samples, 400)}


def warehouse_type(t):
    """The manifest's type text as a warehouse column type (docs/warehouse.md)."""
    if t.startswith("_"):
        return t[1:] + "[]"
    if "." in t or t.startswith("oid:"):
        return "text"
    return t


def archive_batches(root):
    """[(stream, batch dir, manifest)] of every sealed batch under root, in LSN order."""
    out = []
    if not os.path.isdir(root):
        return out
    for stream in sorted(os.listdir(root)):
        sdir = os.path.join(root, stream)
        if not os.path.isdir(sdir):
            continue
        for name in sorted(os.listdir(sdir)):
            parts = name.split("-")
            if len(parts) != 2 or not all(len(p) == 16 for p in parts):
                continue
            with open(os.path.join(sdir, name, "manifest.json")) as f:
                out.append((stream, os.path.join(sdir, name), json.load(f)))
    return out


@measurement
class ZetlE2E(ZetlCapture):
    """zetl run --once with a warehouse: capture + archive + apply, timed until exit;
    then `zetl verify` (timed separately, exit code recorded)."""

    name = "zetl_e2e"
    label = "zetl end to end (archive + warehouse)"
    enabled_by = "e2e"
    needs_warehouse = True

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}e2e{rep}"

    def workdir(self, rep):
        return os.path.join(self.b.work, f"e2e-{rep}")

    def wh_schema(self, rep):
        return f"{self.b.prefix_objects}e2e{rep}"

    def config_text(self, rep):
        extra = ""
        if self.b.args.batch_age_ms:
            extra = f"  max_age_ms: {self.b.args.batch_age_ms}\n"
        text = super().config_text(rep).replace("  dir: ./zetl-data\n",
                                                "  dir: ./zetl-data\n" + extra)
        return text + f"""warehouse:          # dsn comes from ZETL_WAREHOUSE_DSN
  kind: postgres
  schema: {self.wh_schema(rep)}
  deletes: hard
"""

    def env(self):
        env = super().env()
        env["ZETL_WAREHOUSE_DSN"] = self.b.wh.dsn
        return env

    def prepare(self, rep):
        self.b.wh.cleanup.append(f"DROP SCHEMA IF EXISTS {qident(self.wh_schema(rep))} CASCADE")
        super().prepare(rep)
        self.seeded_rows = self.seed_warehouse(rep)

    def seed_warehouse(self, rep):
        """zetl has no initial snapshot: rows that exist before its slot (the preloaded
        rows of mixed, pgbench's -i) never reach the warehouse through it. The bench
        copies them in before the measured run (not timed), into a table created as zetl
        creates it (docs/warehouse.md: tenant column, source columns, _zetl_lsn = 0,
        _zetl_synced_at, primary key (tenant, source key)), so that the changes apply to
        the same rows as on the source and verify can compare."""
        b, wh = self.b, self.b.wh
        rels = b.src.psql(
            "SELECT n.nspname, c.relname, c.oid, c.reltuples FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname LIKE "
            + qlit(b.prefix_schemas.replace("_", "\\_") + "%") + " ORDER BY 2, 1")
        by_rel = {}
        for nsp, rel, oid, _ in rels:
            by_rel.setdefault(rel, []).append((nsp, oid))
        schema = qident(self.wh_schema(rep))
        total = 0
        for rel, tenants in by_rel.items():
            n = int(b.src.value("SELECT " + " + ".join(f"(SELECT count(*) FROM {qident(nsp)}.{qident(rel)})"
                                           for nsp, _ in tenants)))
            if n == 0:
                continue
            oid = tenants[0][1]
            cols = b.src.psql("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                              f"WHERE attrelid = {oid} AND attnum > 0 AND NOT attisdropped "
                              "ORDER BY attnum")
            key = [r[0] for r in b.src.psql(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                f"AND a.attnum = ANY (i.indkey) WHERE i.indrelid = {oid} AND i.indisprimary "
                "ORDER BY array_position(i.indkey::int2[], a.attnum)")]
            ddl = (f"CREATE SCHEMA IF NOT EXISTS {schema};\nCREATE TABLE {schema}.{qident(rel)} "
                   f"(tenant_id text NOT NULL, "
                   + "".join(f"{qident(c)} {t}, " for c, t in cols)
                   + "_zetl_lsn bigint, _zetl_synced_at timestamptz"
                   + (f", PRIMARY KEY (tenant_id, {', '.join(qident(k) for k in key)})"
                      if key else "") + ");\n")
            wh.psql(ddl)
            for nsp, _ in tenants:
                out = subprocess.Popen(
                    ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", b.src.dsn, "-c",
                     f"COPY (SELECT {qlit(nsp)}, *, 0::bigint, now() FROM {qident(nsp)}."
                     f"{qident(rel)}) TO STDOUT"], stdout=subprocess.PIPE)
                p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", wh.dsn,
                                    "-c", f"COPY {schema}.{qident(rel)} FROM STDIN"],
                                   stdin=out.stdout, stderr=subprocess.PIPE)
                out.stdout.close()
                if out.wait() != 0 or p.returncode != 0:
                    raise RuntimeError(f"seeding the warehouse failed: {p.stderr.decode()[-500:]}")
            wh.psql(f"ANALYZE {schema}.{qident(rel)}")
            total += n
        if total:
            log(f"  seeded warehouse schema {self.wh_schema(rep)} with the {total} rows that "
                "predate the slot")
        return total

    def offsets_end_lsn(self, rep):
        got = self.b.wh.psql(f"SELECT end_lsn FROM {qident(self.wh_schema(rep))}._zetl_offsets",
                             check=False)
        return int(got[0][0]) if got and got[0][0] else 0

    def verify(self, rep, daemon_running=False):
        """zetl verify. It waits until the warehouse's _zetl_offsets.end_lsn reaches the
        source's pg_current_wal_insert_lsn(). After `run --once` that often never happens:
        --once exits without recording idle progress, so any WAL after the last commit
        (here the bench's end marker; on any server the bgwriter's running-xacts records)
        leaves end_lsn behind and verify gives up after 120 s with exit 1. The bench checks
        that condition itself and, when it holds, runs verify with a `zetl run` daemon on
        the same config (which records idle progress after 1 s), as the message of verify
        suggests ("is zetl running?"). Both facts are recorded."""
        wd = self.workdir(rep)
        out = os.path.join(wd, "verify.stdout")
        note, daemon = None, None
        if not daemon_running:
            end, cur = self.offsets_end_lsn(rep), self.b.src.current_lsn()
            if end < cur:
                note = (f"after run --once the warehouse's _zetl_offsets.end_lsn "
                        f"{lsn_text(end)} is {cur - end} bytes behind the source's insert LSN "
                        f"{lsn_text(cur)} (WAL written after zetl's last commit and never noted "
                        "as progress): verify alone would wait 120 s and exit 1; verified with "
                        "a zetl run daemon on the same config")
                log("  " + note)
                daemon = TimedProcess([self.b.zetl_bin, "run", "--config",
                                       os.path.join(wd, "zetl.yaml")], cwd=wd, env=self.env(),
                                      stderr_path=os.path.join(wd, "verify-daemon.stderr"))
        try:
            r = run_timed([self.b.zetl_bin, "verify", "--config", os.path.join(wd, "zetl.yaml")],
                          cwd=wd, env=self.env(), stdout_path=out,
                          stderr_path=os.path.join(wd, "verify.stderr"),
                          timeout=self.b.args.timeout)
        finally:
            if daemon is not None:
                daemon.stop()
        v = {"exit_code": r["exit_code"], "seconds": r["wall_s"], "output": tail(out, 1500),
             "mode": "with a zetl daemon running" if (daemon or daemon_running) else "alone"}
        if note:
            v["once_end_lsn_behind"] = note
        log(f"  zetl verify exit {r['exit_code']} in {r['wall_s']:.1f}s")
        if r["exit_code"] != 0:
            log("  verify output:\n" + tail(out, 1500) + tail(os.path.join(wd, "verify.stderr")))
        return v

    def warehouse_rows(self, rep):
        s = qlit(self.wh_schema(rep))
        tables = self.b.wh.psql("SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)"
                                " FROM information_schema.tables WHERE table_schema = " + s +
                                " AND table_name NOT LIKE '\\_zetl\\_%'")
        if not tables:
            return 0
        return int(self.b.wh.value("SELECT " + " + ".join(f"(SELECT count(*) FROM {t[0]})" for t in tables)))

    def costs(self, r, wh_cpu, src_cpu):
        if r["rows"]:
            if wh_cpu is not None:
                r["warehouse_cpu_s"] = round(wh_cpu, 2)
                r["warehouse_cpu_s_per_million_rows"] = round(wh_cpu / r["rows"] * 1e6, 3)
            if src_cpu is not None:
                r["source_cpu_s"] = round(src_cpu, 2)
        return r

    def run(self, rep):
        wh = self.b.wh
        wh.before_run()
        c0, s0 = wh.cpu_s(), self.b.src_cpu_s()
        r = self.zetl(rep, tag="e2e")
        c1, s1 = wh.cpu_s(), self.b.src_cpu_s()
        a = archive_stats(os.path.join(self.workdir(rep), "archive"))
        r.update(a)
        same = wh.mode == "database"
        self.costs(r, None if c0 is None else c1 - c0,
                   None if (s0 is None or same) else s1 - s0)
        r["statements"] = wh.top_statements()
        r["raw_mb_per_s"] = round(a["raw_bytes"] / 1e6 / r["wall_s"], 2)
        r["compressed_bytes_per_row"] = round(a["file_bytes"] / a["rows"], 2) if a["rows"] else None
        r["archive_bytes_per_row"] = round(a["archive_bytes"] / a["rows"], 2) if a["rows"] else None
        r["warehouse_rows"] = self.warehouse_rows(rep)
        r["warehouse_seeded_rows"] = self.seeded_rows
        r["verify"] = self.verify(rep)
        self.b.e2e_archives[rep] = os.path.join(self.workdir(rep), "archive")
        if not self.b.args.keep:
            wh.psql(f"DROP SCHEMA IF EXISTS {qident(self.wh_schema(rep))} CASCADE")
        return rates(r, self.b)


@measurement
class BareCopy(Measurement):
    """The warehouse's own bulk-load rate for the same rows: zetl's archive CSV files of
    the same repetition, decompressed beforehand (not timed), loaded with one
    `COPY ... FROM 'file' (FORMAT csv)` per table file shape into an empty, ordinary
    (logged, unindexed) table with the CSV's columns and types, in one transaction.
    Timed: the COPY statements and the COMMIT (psql \\timing)."""

    name = "bare_copy"
    label = "warehouse bare COPY (same rows)"
    enabled_by = "e2e"
    needs_warehouse = True

    def run(self, rep):
        root = self.b.e2e_archives.get(rep)
        if root is None:
            return None
        wh = self.b.wh
        out = os.path.join(self.b.work, f"bare-{rep}")
        os.makedirs(out, exist_ok=True)
        for d in (self.b.work, out):  # the server process reads the files
            os.chmod(d, 0o755)
        groups = {}  # (table, columns) -> [paths], rows
        tenant_col = "tenant_id"
        for _, bdir, man in archive_batches(root):
            tenant_col = man.get("tenant_column", tenant_col)
            for fi in man["files"]:
                key = (fi["table"], tuple((c["name"], c["type"]) for c in fi["columns"]))
                g = groups.setdefault(key, [[], 0])
                g[0].append(os.path.join(bdir, fi["file"]))
                g[1] += fi["rows"]
        t = time.monotonic()
        files = []
        for i, ((table, cols), (paths, nrows)) in enumerate(groups.items()):
            path = os.path.join(out, f"t{i}.csv")
            with open(path, "wb") as f:
                subprocess.run(["zstd", "-q", "-dc"] + paths, stdout=f, check=True)
            os.chmod(path, 0o644)
            files.append((i, table, cols, path, nrows))
        decompress_s = time.monotonic() - t
        schema = qident(f"{self.b.prefix_objects}bare{rep}")
        ddl = [f"DROP SCHEMA IF EXISTS {schema} CASCADE;\nCREATE SCHEMA {schema};\n"]
        wh.cleanup.append(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        copies = []
        for i, table, cols, path, _ in files:
            colsql = ", ".join(["_zetl_op text", "_zetl_lsn bigint", "_zetl_seq integer",
                                "_zetl_commit_ts timestamptz", "_zetl_unchanged integer[]",
                                f"{qident(tenant_col)} text"]
                               + [f"{qident(n)} {warehouse_type(ty)}" for n, ty in cols])
            ddl.append(f"CREATE TABLE {schema}.t{i} ({colsql});\n")
            if wh.server_files:
                copies.append(f"COPY {schema}.t{i} FROM {qlit(path)} (FORMAT csv);\n")
            else:
                copies.append(f"\\copy {schema}.t{i} FROM {qlit(path)} (FORMAT csv)\n")
        wh.psql("".join(ddl))
        wh.before_run()
        c0 = wh.cpu_s()
        script = "\\timing on\nBEGIN;\n" + "".join(copies) + "COMMIT;\n"
        p = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", wh.dsn, "-f", "-"],
                           input=script.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=self.b.args.timeout)
        c1 = wh.cpu_s()
        if p.returncode != 0:
            raise RuntimeError(f"bare COPY failed: {p.stderr.decode(errors='replace')[-2000:]}")
        times = [float(line.split()[1]) for line in p.stdout.decode().splitlines()
                 if line.startswith("Time: ")]
        rows = sum(f[4] for f in files)
        loaded = int(wh.value("SELECT " + " + ".join(f"(SELECT count(*) FROM {schema}.t{f[0]})"
                                         for f in files) if files else "SELECT 0"))
        r = {"wall_s": round(sum(times) / 1000.0, 4), "rows": rows, "rows_loaded": loaded,
             "statement_ms": times, "decompress_s": round(decompress_s, 3),
             "csv_bytes": sum(os.path.getsize(f[3]) for f in files), "files": len(files),
             "peak_rss_kb": 0, "copy": "server-side COPY FROM file" if wh.server_files
             else "psql \\copy (client-side)",
             "statements": wh.top_statements(4)}
        if c0 is not None and rows:
            r["warehouse_cpu_s"] = round(c1 - c0, 2)
            r["warehouse_cpu_s_per_million_rows"] = round((c1 - c0) / rows * 1e6, 3)
        if not self.b.args.keep:
            wh.psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
        r = rates(r, self.b)
        r["peak_rss_mb"] = None  # a server-side statement: no process of ours
        return r


def weighted_percentiles(pairs, qs):
    """pairs: [(value, weight)]; the value at each quantile q of the weighted distribution."""
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    out, acc, i = {}, 0, 0
    for q in sorted(qs):
        need = q * total
        while i < len(pairs) and acc + pairs[i][1] < need:
            acc += pairs[i][1]
            i += 1
        out[q] = pairs[min(i, len(pairs) - 1)][0] if pairs else None
    return out


@measurement
class ZetlLag(ZetlE2E):
    """zetl run as a daemon (not --once), started before the workload and applying to
    the warehouse while the workload runs at its target rate; per change, lag = the
    commit time of the warehouse transaction that made it visible minus its source
    commit time. Only one run (it is tied to the generation of the workload)."""

    name = "zetl_lag"
    label = "zetl daemon, commit-to-warehouse lag"
    enabled_by = "lag"
    live = True
    POLL_S = 0.05

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}lag{rep}"

    def workdir(self, rep):
        return os.path.join(self.b.work, f"lag-{rep}")

    def wh_schema(self, rep):
        return f"{self.b.prefix_objects}lag{rep}"

    def prepare(self, rep):
        if rep == 1:
            super().prepare(rep)

    def live_start(self):
        wd, b = self.workdir(1), self.b
        b.wh.before_run()
        self.c0, self.s0 = b.wh.cpu_s(), b.src_cpu_s()
        self.daemon = TimedProcess([b.zetl_bin, "run", "--config", os.path.join(wd, "zetl.yaml")],
                                   cwd=wd, env=self.env(),
                                   stderr_path=os.path.join(wd, "zetl-daemon.stderr"))
        slot = f"{self.slot_prefix(1)}_0"
        deadline = time.time() + 60
        while not b.src.psql(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = {qlit(slot)}"
                             " AND active"):
            if not self.daemon.alive() or time.time() > deadline:
                self.daemon.stop()
                raise RuntimeError("zetl daemon did not start streaming:\n"
                                   + tail(os.path.join(wd, "zetl-daemon.stderr")))
            time.sleep(0.1)
        # Poller: one psql session reading _zetl_offsets every POLL_S; the server's
        # clock and the offset row's commit timestamp are in each line.
        self.poll_out = os.path.join(wd, "offsets-poll.txt")
        q = qident(self.wh_schema(1))
        cts = ("extract(epoch FROM pg_xact_commit_timestamp(xmin))" if b.wh.commit_ts
               else "NULL")
        self.poll_sql = (f"SELECT extract(epoch FROM clock_timestamp()), last_lsn, end_lsn, "
                         f"{cts}, extract(epoch FROM applied_at) FROM {q}._zetl_offsets;\n")
        self.poller_stop = threading.Event()
        self.poller = threading.Thread(target=self._poll, daemon=True)
        self.poller.start()
        self.t_gen0 = time.time()

    def _poll(self):
        with open(self.poll_out, "wb") as out:
            p = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-F", " ", "-d", self.b.wh.dsn,
                                  "-f", "-"], stdin=subprocess.PIPE, stdout=out,
                                 stderr=subprocess.DEVNULL)
            try:
                while not self.poller_stop.is_set():
                    p.stdin.write(self.poll_sql.encode())
                    p.stdin.flush()
                    self.poller_stop.wait(self.POLL_S)
            except BrokenPipeError:
                pass
            finally:
                try:
                    p.stdin.close()
                except BrokenPipeError:
                    pass
                p.wait()

    def live_finish(self):
        b, wd = self.b, self.workdir(1)
        gen_end = time.time()
        root = os.path.join(wd, "archive")
        q = qident(self.wh_schema(1))
        deadline = time.time() + b.args.timeout
        while True:  # drained: every row archived, the last batch applied
            a = archive_stats(root)
            if a["rows"] >= b.rows:
                last = max(m["last_lsn_int"] for _, _, m in archive_batches(root))
                got = b.wh.psql(f"SELECT last_lsn FROM {q}._zetl_offsets", check=False)
                if got and int(got[0][0]) >= last:
                    break
            if not self.daemon.alive():
                raise RuntimeError("zetl daemon exited:\n"
                                   + tail(os.path.join(wd, "zetl-daemon.stderr")))
            if time.time() > deadline:
                raise RuntimeError(f"zetl daemon did not apply all {b.rows} rows in time")
            time.sleep(0.2)
        drained = time.time()
        time.sleep(3 * self.POLL_S)
        self.poller_stop.set()
        self.poller.join()
        statements = b.wh.top_statements()
        verify = self.verify(1, daemon_running=True)
        c1, s1 = b.wh.cpu_s(), b.src_cpu_s()
        r = self.daemon.stop()
        if r["exit_code"] != 0:
            log(f"zetl daemon exited {r['exit_code']} on SIGTERM:\n"
                + tail(os.path.join(wd, "zetl-daemon.stderr")))
        a = archive_stats(root)
        r.update(a)
        r["verify"] = verify
        r["statements"] = statements
        r["drain_s_after_generate"] = round(drained - gen_end, 3)
        r["compressed_bytes_per_row"] = round(a["file_bytes"] / a["rows"], 2) if a["rows"] else None
        r["archive_bytes_per_row"] = round(a["archive_bytes"] / a["rows"], 2) if a["rows"] else None
        self.costs(r, None if self.c0 is None else c1 - self.c0,
                   None if (self.s0 is None or b.wh.mode == "database") else s1 - self.s0)
        r["lag"] = self.analyse(root)
        r["warehouse_rows"] = self.warehouse_rows(1)
        r["warehouse_seeded_rows"] = self.seeded_rows
        # wall_s here is the daemon's life (start, workload, drain, verify): rows/s is
        # the source's rate, not zetl's limit.
        r["wall_s_note"] = "daemon lifetime (start to SIGTERM, verify included)"
        self.result = rates(r, b)
        if not b.args.keep:
            shutil.rmtree(root, ignore_errors=True)

    def analyse(self, root):
        """Per change: warehouse commit of its batch - source commit (see README)."""
        b = self.b
        batches = archive_batches(root)
        txn_ts = {}  # commit lsn -> source commit time (epoch s)
        per_batch = []  # (first, last, {lsn: rows})
        for _, bdir, man in batches:
            counts = {}
            for fi in man["files"]:
                p = subprocess.Popen(["zstd", "-q", "-dc", os.path.join(bdir, fi["file"])],
                                     stdout=subprocess.PIPE)
                last_lsn, last_ts = None, None
                for row in csv.reader(io.TextIOWrapper(p.stdout, encoding="utf-8",
                                                         newline="")):
                    lsn = row[1]
                    if lsn != last_lsn:
                        last_lsn = lsn
                        li = int(lsn)
                        if li not in txn_ts:
                            txn_ts[li] = datetime.datetime.fromisoformat(row[3]).timestamp()
                        last_ts = li
                    counts[last_ts] = counts.get(last_ts, 0) + 1
                p.wait()
            per_batch.append((man["first_lsn_int"], man["last_lsn_int"], counts))
        # Warehouse commit time of each batch: (1) the rows it wrote that are still
        # there: pg_xact_commit_timestamp(xmin) of the apply transaction; (2) the offset
        # poller: first sighting of last_lsn (the row's xmin commit time; or, without
        # track_commit_timestamp, the poll's clock: an upper bound).
        q = qident(self.wh_schema(1))
        commit = {}  # batch index -> (epoch, how)
        starts = {}
        if b.wh.commit_ts:
            tables = b.wh.psql("SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)"
                               " FROM information_schema.tables WHERE table_schema = "
                               + qlit(self.wh_schema(1)) + " AND table_name NOT LIKE '\\_zetl\\_%'")
            groups = []
            for (t,) in tables:
                groups += b.wh.psql(f"SELECT min(_zetl_lsn), max(_zetl_lsn), "
                                    f"extract(epoch FROM pg_xact_commit_timestamp(xmin)), "
                                    f"extract(epoch FROM min(_zetl_synced_at)) FROM {t} "
                                    f"GROUP BY xmin")
            firsts = [x[0] for x in per_batch]
            for lo, hi, ts, st in groups:
                i = bisect.bisect_right(firsts, int(lo)) - 1
                if i >= 0 and int(hi) <= per_batch[i][1] and ts:
                    commit[i] = (float(ts), "warehouse rows: pg_xact_commit_timestamp(xmin)")
                    starts[i] = float(st)
        seen = {}
        try:
            with open(self.poll_out) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) < 5:
                        continue
                    now, last = float(parts[0]), int(parts[1])
                    cts = float(parts[3]) if parts[3] else None
                    app = float(parts[4]) if parts[4] else None
                    if last not in seen:
                        seen[last] = (cts if cts is not None else now, app,
                                      "offset poller: xmin commit timestamp" if cts is not None
                                      else f"offset poller: first sighting (<= {self.POLL_S}s late)")
        except OSError:
            pass
        for i, (_, last, _) in enumerate(per_batch):
            if last in seen:
                if i not in commit:
                    commit[i] = (seen[last][0], seen[last][2])
                if i not in starts and seen[last][1] is not None:
                    starts[i] = seen[last][1]
        # Unresolved batches take the next resolved one's time (an upper bound).
        nxt, unresolved = None, 0
        times = [None] * len(per_batch)
        for i in range(len(per_batch) - 1, -1, -1):
            if i in commit:
                nxt = commit[i][0]
                times[i] = nxt
            else:
                unresolved += 1
                times[i] = nxt
        pairs, buckets, applied = [], {}, {}
        committed = {}
        t0 = self.t_gen0
        for i, (_, _, counts) in enumerate(per_batch):
            if times[i] is None:
                continue
            for lsn, n in counts.items():
                lag = times[i] - txn_ts[lsn]
                pairs.append((lag, n))
                sec = int(txn_ts[lsn] - t0)
                buckets.setdefault(sec, []).append((lag, n))
                committed[sec] = committed.get(sec, 0) + n
            a_sec = int(times[i] - t0)
            applied[a_sec] = applied.get(a_sec, 0) + sum(counts.values())
        qs = (0.5, 0.95, 0.99, 1.0)
        pct = weighted_percentiles(pairs, qs)
        series = []
        for sec in sorted(set(buckets) | set(applied)):
            p = weighted_percentiles(buckets.get(sec, []), qs) if sec in buckets else {}
            series.append({"t": sec, "p50": p.get(0.5), "p95": p.get(0.95), "p99": p.get(0.99),
                           "max": p.get(1.0), "source_rows": committed.get(sec, 0),
                           "applied_rows": applied.get(sec, 0)})
        apply_s = [commit[i][0] - starts[i] for i in commit if i in starts]
        nrows = sum(n for _, n in pairs)
        return {
            "changes": nrows,
            "transactions": len(txn_ts),
            "batches": len(per_batch),
            "batch_rows_mean": round(nrows / len(per_batch), 1) if per_batch else None,
            "batches_resolved_exactly": len(per_batch) - unresolved,
            "batch_commit_sources": sorted({how for _, how in commit.values()}),
            "p50_s": round(pct[0.5], 4) if pairs else None,
            "p95_s": round(pct[0.95], 4) if pairs else None,
            "p99_s": round(pct[0.99], 4) if pairs else None,
            "max_s": round(pct[1.0], 4) if pairs else None,
            "mean_s": round(sum(l * n for l, n in pairs) / nrows, 4) if nrows else None,
            "min_s": round(min(l for l, _ in pairs), 4) if pairs else None,
            "apply_txn_s": ({"p50": round(weighted_percentiles([(x, 1) for x in apply_s],
                                                                [0.5])[0.5], 4),
                             "max": round(max(apply_s), 4), "n": len(apply_s)}
                            if apply_s else None),
            "series": series,
        }

    def run(self, rep):
        if rep != 1:
            return None
        return self.result

    @staticmethod
    def summarize(runs, b):
        return dict(runs[0])


@measurement
class ZetlE2EPerf(ZetlE2E):
    """--perf with --e2e: one more end-to-end run under perf record -g (not a figure)."""

    name = "zetl_e2e_perf"
    label = "zetl end to end under perf"
    enabled_by = ("perf", "e2e")

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}e2eperf{rep}"

    def workdir(self, rep):
        return os.path.join(self.b.work, f"e2eperf-{rep}")

    def wh_schema(self, rep):
        return f"{self.b.prefix_objects}e2eperf{rep}"

    def prepare(self, rep):
        if rep == 1:
            super().prepare(rep)

    def run(self, rep):
        if rep != 1:
            return None
        data = os.path.join(self.workdir(rep), "perf.data")
        r = self.zetl(rep, cmd_prefix=["perf", "record", "-g", "-F", "999", "-o", data, "--"],
                      tag="perf")
        path = os.path.join(self.b.results, f"{self.b.wl.name}.e2e.perf.txt")
        perf_report(data, path)
        if not self.b.args.keep:
            self.b.wh.psql(f"DROP SCHEMA IF EXISTS {qident(self.wh_schema(rep))} CASCADE")
        return {"wall_s": r["wall_s"], "rows": 0, "report": os.path.relpath(path, HERE)}

    @staticmethod
    def summarize(runs, b):
        return runs[0]


# --------------------------------------------------------------------------
# One workload, start to end
# --------------------------------------------------------------------------

class Bench:
    def __init__(self, args, wl_name, zetl_bin, results):
        self.args = args
        self.zetl_bin = zetl_bin
        self.results = results
        self.external = bool(args.source_dsn)
        self.prefix_schemas = args.schema_prefix or ("zetlbench_" if self.external
                                                     else "tenant_")
        self.prefix_objects = "zetlbench_" if self.external else "zb_"
        self.wl = WORKLOADS[wl_name](args, self.prefix_schemas)
        self.runs = {}
        self.wh = None
        self.e2e_archives = {}
        self.publication = None
        self.cleanup = []
        self.work = tempfile.mkdtemp(prefix=f"zetlbench-{wl_name}-")

    def src_cpu_s(self):
        return cluster_cpu_s(getattr(self.src, "pid", None))

    def on_cleanup(self, sql):
        if self.external:
            self.src.cleanup_sql.append(sql)

    def check_external(self):
        taken = self.src.psql("SELECT nspname FROM pg_namespace WHERE nspname LIKE "
                              + qlit(self.prefix_schemas.replace("_", "\\_") + "%"))
        if taken:
            raise RuntimeError(f"schemas starting with {self.prefix_schemas!r} already exist "
                               f"({', '.join(r[0] for r in taken[:5])}); the bench creates and "
                               "drops its own: drop them or pass --schema-prefix")

    def execute(self):
        args = self.args
        measures = [m(self) for m in MEASUREMENTS if m.enabled(args, self.wl)]
        try:
            return self._execute_source(measures)
        finally:
            for m in measures:
                try:
                    m.close()
                except Exception as e:  # the others must still be closed
                    log(f"closing {m.label} failed: {e}")

    def _execute_source(self, measures):
        args = self.args
        need_wh = any(m.needs_warehouse for m in measures)
        log(f"{self.wl.name}: {self.wl.description}")
        if self.external:
            self.src = ExistingSource(args.source_dsn)
            self.check_external()
        else:
            conf = dict(LocalCluster.CONF)
            if need_wh and args.warehouse == "database" and not args.warehouse_dsn:
                conf.update(SAME_CLUSTER_EXTRA)
            self.src = LocalCluster(keep=args.keep, conf=conf)
        try:
            if need_wh:
                log("warehouse: " + ("--warehouse-dsn" if args.warehouse_dsn else
                                     "a second throwaway cluster" if args.warehouse == "cluster"
                                     else "database 'warehouse' in the source cluster"))
                self.wh = Warehouse(args, self)
            return self._execute(measures)
        finally:
            if self.wh is not None:
                self.wh.close(os.path.join(self.results, f"{self.wl.name}.warehouse-plans.log")
                              if args.warehouse_explain is not None else None)
            self.src.close()
            if args.keep:
                log(f"kept work directory {self.work}")
            else:
                shutil.rmtree(self.work, ignore_errors=True)

    def _execute(self, measures):
        args, src, wl = self.args, self.src, self.wl
        vnum = src.server_version_num()
        # The same protocol options as zetl's START_REPLICATION (replicator/stream.c).
        self.proto_version = args.baseline_proto or (4 if vnum >= 160000 else
                                                     3 if vnum >= 150000 else 2)
        if self.external:
            for s in wl.schemas:
                src.cleanup_sql.append(f"DROP SCHEMA IF EXISTS {qident(s)} CASCADE")
        log(f"setup: {len(wl.schemas)} tenant schema(s)")
        t = time.monotonic()
        wl.setup(src)
        setup_s = time.monotonic() - t
        log(f"creating slots for {args.repeat} repetition(s)")
        for rep in range(1, args.repeat + 1):
            for m in sorted(measures, key=lambda m: m.prepare_rank):
                m.prepare(rep)
        stat_before = self.row_stats()
        self.start_lsn = src.current_lsn()
        log(f"generating the workload from {lsn_text(self.start_lsn)}")
        live = [m for m in measures if m.live]
        for m in live:
            log(f"starting {m.label}")
            m.live_start()
        t = time.monotonic()
        gen = wl.generate(src, self.work)
        gen_s = time.monotonic() - t
        self.end_lsn = src.current_lsn()
        # A record past the end, flushed: both readers see WAL beyond end_lsn
        # and know nothing else committed before it.
        src.psql("SELECT pg_logical_emit_message(false, 'zetlbench', 'end')")
        src.wait_flushed(src.current_lsn())
        self.wal_bytes = self.end_lsn - self.start_lsn
        stat_after = self.row_stats()
        rows_stat = sum(stat_after.values()) - sum(stat_before.values())
        self.rows = gen.get("rows_expected") or rows_stat
        log(f"generated {rows_stat} row changes, {self.wal_bytes / 1e6:.1f} MB of WAL in "
            f"{gen_s:.1f}s ({rows_stat / gen_s:,.0f} rows/s); end {lsn_text(self.end_lsn)}")
        for m in live:
            log(f"waiting for {m.label} to apply everything")
            m.live_finish()

        runs = self.runs = {m.name: [] for m in measures}
        for rep in range(1, args.repeat + 1):
            for m in measures:
                log(f"run {rep}/{args.repeat}: {m.label}")
                r = m.run(rep)
                if r is not None:
                    r["repetition"] = rep
                    runs[m.name].append(r)
                    if "rows_per_s" in r:
                        log(f"  {r['rows']} rows in {r['wall_s']:.2f}s = "
                            f"{r['rows_per_s']:.0f} rows/s, peak RSS {r.get('peak_rss_mb')} MB")
        best = {m.name: m.summarize(runs[m.name], self) for m in measures if runs[m.name]}
        for r in best.values():
            r.pop("rss_samples_kb", None)  # kept in "runs"
            if isinstance(r.get("lag"), dict):
                r["lag"] = {k: v for k, v in r["lag"].items() if k != "series"}  # in "runs"

        summary = {}
        if "baseline" in best and "zetl" in best:
            b, z = best["baseline"], best["zetl"]
            summary = {
                "rows": self.rows,
                "wal_mb": round(self.wal_bytes / 1e6, 2),
                "generate_s": round(gen_s, 2),
                "baseline_rows_per_s": b["rows_per_s"],
                "zetl_rows_per_s": z["rows_per_s"],
                "ratio_rows_per_s": round(z["rows_per_s"] / b["rows_per_s"], 3),
                "zetl_raw_mb_per_s": z["raw_mb_per_s"],
                "zetl_wal_mb_per_s": z["wal_mb_per_s"],
                "baseline_wal_mb_per_s": b["wal_mb_per_s"],
                "zetl_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["zetl"]),
                "zetl_cpu_s_per_million_rows": z.get("cpu_s_per_million_rows"),
                "zetl_compressed_bytes_per_row": z["compressed_bytes_per_row"],
                "rows_match": b["rows"] == z["rows"],
            }
            if "baseline_devnull" in best:
                d = best["baseline_devnull"]
                summary["devnull_rows_per_s"] = d["rows_per_s"]
                summary["ratio_vs_devnull"] = round(z["rows_per_s"] / d["rows_per_s"], 3)
        targets = {}
        if wl.name == "insert-1m" and summary:
            targets = {
                "capture_ratio_min": 0.9,
                "capture_ratio": summary["ratio_rows_per_s"],
                "capture_ratio_met": summary["ratio_rows_per_s"] >= 0.9,
                "peak_rss_mb_max": 64,
                "peak_rss_mb": summary["zetl_peak_rss_mb"],
                "peak_rss_met": summary["zetl_peak_rss_mb"] < 64,
            }
        if "zetl_s3" in best and "zetl" in best:
            f, s3 = best["zetl"], best["zetl_s3"]
            ratio = round(s3["rows_per_s"] / f["rows_per_s"], 3)
            summary["s3"] = {
                "rows": s3["rows"],
                "file_rows_per_s": f["rows_per_s"],
                "s3_rows_per_s": s3["rows_per_s"],
                "ratio": ratio,
                "ratio_same_rep": [r.get("ratio_vs_file_same_rep") for r in runs["zetl_s3"]],
                "rows_match": s3["rows"] == f["rows"],
                "file_wall_s": f["wall_s"],
                "s3_wall_s": s3["wall_s"],
                "file_cpu_s_per_million_rows": f.get("cpu_s_per_million_rows"),
                "s3_cpu_s_per_million_rows": s3.get("cpu_s_per_million_rows"),
                "s3rver_cpu_s": s3.get("s3rver_cpu_s"),
                "file_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["zetl"]),
                "s3_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["zetl_s3"]),
                "batches": s3.get("batches"),
                "objects": s3.get("objects"),
                "archive_bytes_per_row": s3.get("archive_bytes_per_row"),
            }
            targets.update({"s3_ratio_min": 0.8, "s3_ratio": ratio,
                            "s3_met": ratio >= 0.8 and s3["rows"] == f["rows"]})
        if "zetl_e2e" in best:
            e = best["zetl_e2e"]
            e2e = {
                "rows": e["rows"],
                "e2e_rows_per_s": e["rows_per_s"],
                "e2e_wall_s": e["wall_s"],
                "verify_exit_codes": [r["verify"]["exit_code"] for r in runs["zetl_e2e"]],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs["zetl_e2e"]),
                "zetl_cpu_s_per_million_rows": e.get("cpu_s_per_million_rows"),
                "warehouse_cpu_s_per_million_rows": e.get("warehouse_cpu_s_per_million_rows"),
                "archive_bytes_per_row": e.get("archive_bytes_per_row"),
                "compressed_bytes_per_row": e.get("compressed_bytes_per_row"),
                "batches": e.get("batches"),
                "warehouse_rows": e.get("warehouse_rows"),
            }
            if "bare_copy" in best:
                c = best["bare_copy"]
                e2e["bare_copy_rows_per_s"] = c["rows_per_s"]
                e2e["ratio_vs_bare_copy"] = round(e["rows_per_s"] / c["rows_per_s"], 3)
                e2e["bare_copy_warehouse_cpu_s_per_million_rows"] = c.get(
                    "warehouse_cpu_s_per_million_rows")
            summary["e2e"] = e2e
            if wl.name.startswith("mixed"):
                targets.update({"e2e_rows_per_s_min": 50000,
                                "e2e_rows_per_s": e["rows_per_s"],
                                "e2e_met": e["rows_per_s"] >= 50000})
        if "zetl_lag" in best:
            l = best["zetl_lag"]
            lag = dict(l["lag"])
            lag.pop("series", None)
            summary["lag"] = dict(lag, rate=wl.p.get("rate"), duration_s=wl.p.get("duration"),
                                  generate_rows_per_s=round(rows_stat / gen_s, 1),
                                  verify_exit_code=l["verify"]["exit_code"],
                                  peak_rss_mb=l["peak_rss_mb"],
                                  zetl_cpu_s_per_million_rows=l.get("cpu_s_per_million_rows"),
                                  warehouse_cpu_s_per_million_rows=l.get(
                                      "warehouse_cpu_s_per_million_rows"),
                                  archive_bytes_per_row=l.get("archive_bytes_per_row"),
                                  drain_s_after_generate=l.get("drain_s_after_generate"))
            if l["lag"]["p99_s"] is not None:
                targets.update({"lag_p99_s_max": 2.0, "lag_p99_s": l["lag"]["p99_s"],
                                "lag_rate": wl.p.get("rate"),
                                "lag_met": l["lag"]["p99_s"] < 2.0})
        return {
            "workload": wl.name,
            "description": wl.description,
            "parameters": wl.params(),
            "seed": args.seed,
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "machine": machine(src, self.zetl_bin),
            "source": {
                "kind": "existing server (--source-dsn)" if self.external else
                        "throwaway local cluster (initdb, 127.0.0.1)",
                "configured": dict(getattr(src, "conf", {})),
                "settings": src.describe(),
            },
            "warehouse": self.wh.describe() if self.wh is not None else None,
            "method": {
                "selection": (f"best of {args.repeat} run(s) per reader (lowest wall-clock "
                              "time); runs alternate pg_recvlogical, zetl on the same WAL"),
                "same_wal": ("all slots were created before the workload; each reader "
                             "decodes the WAL from start_lsn to end_lsn from its own slot"),
                "baseline": ("pg_recvlogical --start --endpos end_lsn+1 -f FILE with pgoutput "
                             "and zetl's protocol options; rows counted by decoding FILE"),
                "zetl": ("zetl run --once (archive file://); wall clock; user+sys CPU "
                         "from wait4(2) rusage; peak RSS from GNU time %M (the process's "
                         "own ru_maxrss); rows and raw_bytes from the manifests"),
                "rss_samples": "VmRSS from /proc every 0.1 s, [seconds, KiB]",
                "zetl_s3": ("--s3: as zetl, but archive.url s3://bench/run<rep> on s3rver "
                            "(npm, node --openssl-legacy-provider) on 127.0.0.1 with its store "
                            "in a temporary directory, same machine; own slot over the same "
                            "WAL, run right after the file-archive zetl run of the same "
                            "repetition; rows and raw_bytes from the manifest.json objects "
                            "read back from s3rver; s3rver_cpu_s = the node process's CPU "
                            "during the run (not in cpu_s); ratio = best zetl_s3 rows/s / "
                            "best zetl rows/s (ratio_same_rep: per repetition)"),
                "zetl_e2e": ("zetl run --once with a postgres warehouse (deletes: hard), own "
                             "slot over the same WAL, empty warehouse schema; wall clock from "
                             "process start until exit (everything up to the WAL position at "
                             "start archived and applied); rows = change records in the "
                             "manifests; then zetl verify (timed separately; exit code); "
                             "warehouse CPU = CPU of all the warehouse cluster's processes "
                             "(from /proc) during the run"),
                "bare_copy": ("the same repetition's archive CSVs, decompressed beforehand, "
                              "loaded with COPY FROM file (FORMAT csv) into empty logged "
                              "unindexed tables of the CSV's columns and types in one "
                              "transaction; time = sum of psql \\timing of the COPYs and "
                              "the COMMIT"),
                "zetl_lag": ("zetl run (daemon) started before the workload; per change, "
                             "lag = pg_xact_commit_timestamp() of the warehouse transaction "
                             "that applied its batch (from the batch's surviving rows' xmin, "
                             "else the first poll of _zetl_offsets showing the batch) minus "
                             "the source commit timestamp (_zetl_commit_ts in the archive, "
                             "from the pgoutput Commit message); both clocks are this host's"),
            },
            "wal": {"start_lsn": lsn_text(self.start_lsn), "end_lsn": lsn_text(self.end_lsn),
                    "bytes": self.wal_bytes},
            "generate": dict(gen, seconds=round(gen_s, 3), setup_seconds=round(setup_s, 3),
                             rows_by_pg_stat=rows_stat,
                             rows_per_s=round(rows_stat / gen_s, 1) if gen_s else None),
            "summary": summary,
            "targets": targets,
            "best": best,
            "runs": runs,
        }

    def row_stats(self):
        rows = self.src.psql(
            "SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del "
            "FROM pg_stat_user_tables WHERE schemaname LIKE "
            + qlit(self.prefix_schemas.replace("_", "\\_") + "%"))
        return {r[0]: int(r[1]) for r in rows}


def sha256_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def machine(src, zetl_bin):
    mem = ""
    cpu = ""
    try:
        with open("/proc/meminfo") as f:
            mem = next(line.split(":", 1)[1].strip() for line in f if line.startswith("MemTotal"))
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), "")
    except (OSError, StopIteration):
        pass
    zv = subprocess.run([zetl_bin, "--version"], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT).stdout.decode().strip()
    # ZETLBENCH_ZETL_REV: the revision a copied binary was built from (the work tree
    # may have moved on since).
    git = os.environ.get("ZETLBENCH_ZETL_REV") or subprocess.run(
        ["git", "-C", HERE, "describe", "--always", "--dirty"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_total": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
        "postgresql": src.value("SELECT version()"),
        "zetl_version": zv,
        "zetl_binary": os.path.abspath(zetl_bin),
        "zetl_git": git,
        "zetl_sha256": sha256_file(zetl_bin),
        "pg_recvlogical": subprocess.run([pg_tool("pg_recvlogical"), "--version"],
                                         stdout=subprocess.PIPE).stdout.decode().strip(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------
# Output: markdown table, SVG plots
# --------------------------------------------------------------------------

def fmt(v, nd=0):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:,.{nd}f}"
    return str(v)


SUMMARY_COLUMNS = [
    ("workload", None, None),
    ("rows", "rows", 0),
    ("WAL MB", "wal_mb", 1),
    ("generate s", "generate_s", 1),
    ("pg_recvlogical rows/s", "baseline_rows_per_s", 0),
    ("zetl rows/s", "zetl_rows_per_s", 0),
    ("zetl / baseline", "ratio_rows_per_s", 2),
    ("pg_recvlogical→/dev/null rows/s", "devnull_rows_per_s", 0),
    ("zetl / devnull", "ratio_vs_devnull", 2),
    ("zetl CSV MB/s", "zetl_raw_mb_per_s", 1),
    ("zetl WAL MB/s", "zetl_wal_mb_per_s", 1),
    ("zetl peak RSS MB", "zetl_peak_rss_mb", 1),
    ("zetl CPU s / M rows", "zetl_cpu_s_per_million_rows", 2),
    ("archive B/row (zstd)", "zetl_compressed_bytes_per_row", 1),
]


def markdown(results):
    lines = ["| " + " | ".join(c[0] for c in SUMMARY_COLUMNS) + " |",
             "|" + "|".join("---" if c[1] is None else "---:" for c in SUMMARY_COLUMNS) + "|"]
    for res in results:
        s = res["summary"]
        cells = [res["workload"]] + [fmt(s.get(k), nd) for _, k, nd in SUMMARY_COLUMNS[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| workload | reader | run | rows | wall s | rows/s | WAL MB/s | CPU s "
                 "| peak RSS MB |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for res in results:
        for name, runs in res["runs"].items():
            for r in runs:
                if "rows_per_s" not in r or "lag" in r:
                    continue
                lines.append(f"| {res['workload']} | {name} | {r['repetition']} | "
                             f"{fmt(r['rows'])} | {fmt(r['wall_s'], 2)} | "
                             f"{fmt(r['rows_per_s'])} | {fmt(r['wal_mb_per_s'], 1)} | "
                             f"{fmt(r.get('cpu_s'), 2)} | {fmt(r.get('peak_rss_mb'), 1)} |")
    e2e = [r for r in results if r["summary"].get("e2e")]
    if e2e:
        lines.append("")
        lines.append("| workload | rows | zetl e2e rows/s | e2e wall s | bare COPY rows/s "
                     "| e2e / bare COPY | verify | zetl peak RSS MB | zetl CPU s / M rows "
                     "| warehouse CPU s / M rows | bare COPY wh CPU s / M rows "
                     "| archive B/row | batches | warehouse rows |")
        lines.append("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for res in e2e:
            e = res["summary"]["e2e"]
            ver = ", ".join("exit 0" if c == 0 else f"exit {c} FAILED"
                            for c in e["verify_exit_codes"])
            lines.append(f"| {res['workload']} | {fmt(e['rows'])} | {fmt(e['e2e_rows_per_s'])} "
                         f"| {fmt(e['e2e_wall_s'], 2)} | {fmt(e.get('bare_copy_rows_per_s'))} "
                         f"| {fmt(e.get('ratio_vs_bare_copy'), 2)} | {ver} "
                         f"| {fmt(e['peak_rss_mb'], 1)} "
                         f"| {fmt(e['zetl_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(e['warehouse_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(e.get('bare_copy_warehouse_cpu_s_per_million_rows'), 2)} "
                         f"| {fmt(e['archive_bytes_per_row'], 1)} | {fmt(e['batches'])} "
                         f"| {fmt(e['warehouse_rows'])} |")
    s3s = [r for r in results if r["summary"].get("s3")]
    if s3s:
        lines.append("")
        lines.append("| workload | rows | file archive rows/s | S3 archive rows/s | S3 / file "
                     "| S3 / file per run | rows match | file CPU s / M rows "
                     "| S3 CPU s / M rows | s3rver CPU s | file peak RSS MB | S3 peak RSS MB "
                     "| batches | S3 objects | archive B/row |")
        lines.append("|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for res in s3s:
            x = res["summary"]["s3"]
            lines.append(f"| {res['workload']} | {fmt(x['rows'])} | {fmt(x['file_rows_per_s'])} "
                         f"| {fmt(x['s3_rows_per_s'])} | {fmt(x['ratio'], 2)} "
                         f"| {', '.join(fmt(v, 2) for v in x['ratio_same_rep'])} "
                         f"| {fmt(x['rows_match'])} "
                         f"| {fmt(x['file_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(x['s3_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(x['s3rver_cpu_s'], 2)} | {fmt(x['file_peak_rss_mb'], 1)} "
                         f"| {fmt(x['s3_peak_rss_mb'], 1)} | {fmt(x['batches'])} "
                         f"| {fmt(x['objects'])} | {fmt(x['archive_bytes_per_row'], 1)} |")
    lagged = [r for r in results if r["summary"].get("lag")]
    if lagged:
        lines.append("")
        lines.append("| workload | target rows/s | achieved rows/s | s | changes | batches "
                     "| lag p50 s | p95 s | p99 s | max s | verify | zetl peak RSS MB "
                     "| zetl CPU s / M rows | warehouse CPU s / M rows | archive B/row "
                     "| drain s |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:"
                     "|---:|")
        for res in lagged:
            l = res["summary"]["lag"]
            lines.append(f"| {res['workload']} | {fmt(l['rate'])} "
                         f"| {fmt(l['generate_rows_per_s'])} "
                         f"| {fmt(res['generate']['seconds'], 1)} | {fmt(l['changes'])} "
                         f"| {fmt(l['batches'])} | {fmt(l['p50_s'], 3)} | {fmt(l['p95_s'], 3)} "
                         f"| {fmt(l['p99_s'], 3)} | {fmt(l['max_s'], 3)} "
                         f"| {'exit 0' if l['verify_exit_code'] == 0 else 'exit %s FAILED' % l['verify_exit_code']} "
                         f"| {fmt(l['peak_rss_mb'], 1)} "
                         f"| {fmt(l['zetl_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(l['warehouse_cpu_s_per_million_rows'], 2)} "
                         f"| {fmt(l['archive_bytes_per_row'], 1)} "
                         f"| {fmt(l['drain_s_after_generate'], 2)} |")

    def met(ok):
        return "met" if ok else "NOT met"

    for res in results:
        t = res["targets"]
        parts = []
        if "capture_ratio" in t:
            parts.append(f"capture ratio {t['capture_ratio']:.2f} (>= {t['capture_ratio_min']}: "
                         f"{met(t['capture_ratio_met'])}), peak RSS {t['peak_rss_mb']} MB "
                         f"(< {t['peak_rss_mb_max']}: {met(t['peak_rss_met'])})")
        if "e2e_rows_per_s" in t:
            parts.append(f"end to end {t['e2e_rows_per_s']:,.0f} rows/s (>= "
                         f"{t['e2e_rows_per_s_min']:,}: {met(t['e2e_met'])})")
        if "s3_ratio" in t:
            parts.append(f"s3 archive capture {t['s3_ratio']:.2f} x file archive (>= "
                         f"{t['s3_ratio_min']} x file archive: {met(t['s3_met'])})")
        if "lag_p99_s" in t:
            parts.append(f"lag p99 {t['lag_p99_s']:.3f} s at {fmt(t['lag_rate'])} rows/s "
                         f"(< {t['lag_p99_s_max']} s: {met(t['lag_met'])})")
        if parts:
            lines.append("")
            lines.append(f"{res['workload']} targets: " + "; ".join(parts))
    whs = sorted({r["warehouse"]["mode"] for r in results if r.get("warehouse")})
    if whs:
        lines.append("")
        lines.append("warehouse: " + ", ".join(
            {"cluster": "a second throwaway PostgreSQL cluster on the same machine",
             "database": "a database in the source's cluster",
             "external": "--warehouse-dsn"}[w] for w in whs))
    m = results[0]["machine"] if results else {}
    if m:
        lines.append("")
        lines.append(f"machine: {m['nproc']} CPU ({m['cpu']}), {m['mem_total']}, Linux "
                     f"{m['kernel']}; {m['postgresql'].split(' on ')[0]}; "
                     f"{m['zetl_version']} ({m['zetl_git']})")
    return "\n".join(lines)


def gnuplot(script, path):
    if not shutil.which("gnuplot"):
        log(f"gnuplot not installed; skipped {path}")
        return False
    p = subprocess.run(["gnuplot"], input=script.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != 0:
        log(f"gnuplot failed for {path}: {p.stderr.decode(errors='replace')[:500]}")
        return False
    return True


def gp_label(text):
    return text.replace('"', "'")


def plot_workload(res, path):
    """Left: rows/s of every run of each reader. Right: RSS over time of each run."""
    bars = []
    for name, runs in res["runs"].items():
        for r in runs:
            if "rows_per_s" in r and "lag" not in r:
                bars.append((f"{name} #{r['repetition']}", r["rows_per_s"]))
    series = []
    for name, runs in res["runs"].items():
        for r in runs:
            if r.get("rss_samples_kb"):
                series.append((f"{name} #{r['repetition']}", r["rss_samples_kb"]))
    data = "$bars << EOD\n" + "".join(f'"{gp_label(l)}" {v}\n' for l, v in bars) + "EOD\n"
    for i, (_, s) in enumerate(series):
        data += f"$rss{i} << EOD\n" + "".join(f"{t} {kb / 1024:.2f}\n" for t, kb in s) + "EOD\n"
    title = gp_label(f"{res['workload']}: {fmt(res['summary'].get('rows'))} rows, "
                     f"{res['machine']['nproc']} CPU, {res['timestamp']}")
    rss_plot = ", ".join(f'$rss{i} using 1:2 with lines lw 2 title "{gp_label(l)}"'
                         for i, (l, _) in enumerate(series)) or "NaN notitle"
    script = f"""{data}
set terminal svg size 1000,420 dynamic enhanced font "sans,11" background rgb "white"
set output "{path}"
set multiplot layout 1,2 title "{title}"
set style fill solid 0.7 border -1
set boxwidth 0.6
set grid ytics
set yrange [0:*]
set ylabel "rows/s"
set title "throughput (each run)"
set xtics rotate by -30 noenhanced
plot $bars using 0:2:xtic(1) with boxes lc rgb "#4472c4" notitle, \\
     $bars using 0:2:(sprintf("%.0f", $2)) with labels offset 0,0.7 notitle
set title "resident memory over time"
set xtics norotate enhanced
set xlabel "seconds"
set ylabel "RSS MB"
set key bottom right
plot {rss_plot}
unset multiplot
"""
    return gnuplot(script, path)


def plot_lag(res, path):
    """Top: lag percentiles per second of source commit time. Bottom: rows/s committed
    on the source and rows/s made visible in the warehouse, over the same time axis."""
    runs = res["runs"].get("zetl_lag") or []
    if not runs or not runs[0].get("lag", {}).get("series"):
        return False
    series = runs[0]["lag"]["series"]
    l = runs[0]["lag"]

    def v(x):
        return "NaN" if x is None else f"{x:.4f}"

    data = "$lag << EOD\n" + "".join(
        f"{p['t']} {v(p['p50'])} {v(p['p95'])} {v(p['p99'])} {v(p['max'])} "
        f"{p['source_rows']} {p['applied_rows']}\n" for p in series) + "EOD\n"
    title = gp_label(f"{res['workload']}: {fmt(res['parameters'].get('rate'))} rows/s target, "
                     f"{fmt(l['changes'])} changes; lag p50 {l['p50_s']:.2f} s, p99 "
                     f"{l['p99_s']:.2f} s, max {l['max_s']:.2f} s; {res['timestamp']}")
    script = f"""{data}
set terminal svg size 1000,640 dynamic enhanced font "sans,11" background rgb "white"
set output "{path}"
set multiplot layout 2,1 title "{title}"
set grid
set key top left
set xlabel "seconds since the workload started (source commit time)"
set ylabel "commit-to-warehouse lag, s"
set yrange [0:{max(2.5, (l['max_s'] or 0) * 1.1):.2f}]
set title "lag per second of source commits"
plot $lag using 1:5 with lines lw 1 lc rgb "#c00000" title "max", \\
     $lag using 1:4 with lines lw 2 lc rgb "#ed7d31" title "p99", \\
     $lag using 1:3 with lines lw 2 lc rgb "#ffc000" title "p95", \\
     $lag using 1:2 with lines lw 2 lc rgb "#4472c4" title "p50", \\
     2 with lines dt 2 lc rgb "#7f7f7f" title "target p99 2 s"
set title "throughput"
set xlabel "seconds since the workload started"
set ylabel "rows/s"
set yrange [0:*]
plot $lag using 1:6 with steps lw 2 lc rgb "#a5a5a5" title "committed on the source", \\
     $lag using 1:7 with steps lw 2 lc rgb "#4472c4" title "made visible in the warehouse"
unset multiplot
"""
    return gnuplot(script, path)


def plot_summary(results_dir):
    """rows/s per workload (baseline vs zetl) from every results/*.json present."""
    rows = []
    for name in sorted(os.listdir(results_dir)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(results_dir, name)) as f:
                res = json.load(f)
            s = res["summary"]
            rows.append((res["workload"], s["baseline_rows_per_s"], s["zetl_rows_per_s"]))
        except (OSError, ValueError, KeyError):
            continue
    if not rows:
        return False
    path = os.path.join(results_dir, "summary.svg")
    data = "$d << EOD\n" + "".join(f'"{gp_label(w)}" {b} {z}\n' for w, b, z in rows) + "EOD\n"
    script = f"""{data}
set terminal svg size 900,420 dynamic enhanced font "sans,11" background rgb "white"
set output "{path}"
set title "capture throughput per workload (best run)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.7 border -1
set grid ytics
set yrange [0:*]
set ylabel "rows/s"
set xtics noenhanced
plot $d using 2:xtic(1) title "pg\\\\_recvlogical (baseline)" lc rgb "#a5a5a5", \\
     $d using 3 title "zetl capture" lc rgb "#4472c4"
"""
    return gnuplot(script, path)


# --------------------------------------------------------------------------

# `make bench` (bench/run.sh build/zetl with no workload named).
DEFAULT_WORKLOADS = ["insert-1m", "mixed-max", "mixed-lag"]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="zetl capture benchmark: runs workloads, compares zetl with "
                    "pg_recvlogical on the same WAL, writes bench/results/<workload>.json "
                    "and .svg, prints a markdown table.",
        epilog="workloads: " + "; ".join(f"{n}: {c.description}" for n, c in WORKLOADS.items()))
    ap.add_argument("zetl_bin", help="path of the zetl binary (build/zetl)")
    ap.add_argument("workloads", nargs="*", metavar="workload",
                    help=f"one or more of {', '.join(WORKLOADS)} (default: insert-1m)")
    g = ap.add_argument_group("workload size (defaults per workload)")
    g.add_argument("--rows", type=int, help="row changes to generate")
    g.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    g.add_argument("--tenants", type=int, help="number of tenant schemas")
    g.add_argument("--txn-rows", type=int, dest="txn_rows", help="rows per transaction")
    g.add_argument("--rate", type=float,
                   help="mixed: target rows/s (default 5000; 0 = unpaced, needs --rows)")
    g.add_argument("--duration", type=float,
                   help="mixed, pgbench: seconds (mixed: rows = rate x duration)")
    g.add_argument("--preload", type=int, help="mixed: rows per tenant before the run")
    g.add_argument("--scale", type=int, help="pgbench: scale factor per schema (default 1)")
    g.add_argument("--clients", type=int, help="pgbench: clients per schema (default 1)")
    m = ap.add_argument_group("method")
    m.add_argument("--repeat", type=int, default=2,
                   help="runs of each reader on the same WAL; the best is reported (default 2)")
    m.add_argument("--baseline-proto", type=int, dest="baseline_proto",
                   help="pgoutput proto_version for pg_recvlogical (default: what zetl uses)")
    m.add_argument("--baseline-streaming", dest="baseline_streaming",
                   action=argparse.BooleanOptionalAction, default=True,
                   help="pass streaming=on to pg_recvlogical as zetl does (default on)")
    m.add_argument("--perf", action="store_true",
                   help="also run zetl once under perf record -g; writes results/<w>.perf.txt")
    m.add_argument("--s3", action="store_true",
                   help="also run zetl with an S3 archive on s3rver (loopback; needs "
                        "node_modules from scripts/deps.sh) and report its rows/s against "
                        "the file archive's (target: >= 0.8 x)")
    m.add_argument("--timeout", type=float, default=7200, help="seconds per reader run")
    e = ap.add_argument_group("end to end (PostgreSQL warehouse)")
    e.add_argument("--e2e", action=argparse.BooleanOptionalAction, default=None,
                   help="also run zetl with a warehouse (run --once, then verify) and the "
                        "warehouse's bare COPY of the same rows (default: on for mixed-max)")
    e.add_argument("--lag", action=argparse.BooleanOptionalAction, default=None,
                   help="also run zetl as a daemon into the warehouse while the workload is "
                        "generated and measure commit-to-warehouse lag (default: on for "
                        "mixed-lag; meant for paced workloads)")
    e.add_argument("--warehouse", choices=["cluster", "database"], default="cluster",
                   help="cluster: a second throwaway cluster (default); database: a database "
                        "in the source's cluster")
    e.add_argument("--warehouse-dsn", dest="warehouse_dsn",
                   default=os.environ.get("ZETLBENCH_WAREHOUSE_DSN") or None,
                   help="use this existing PostgreSQL server as the warehouse (schemas zb_* "
                        "or zetlbench_* are created and dropped)")
    e.add_argument("--warehouse-explain", dest="warehouse_explain", type=int, metavar="MS",
                   help="diagnostics: auto_explain (analyze, buffers) on the warehouse cluster "
                        "for statements slower than MS; the server log goes to "
                        "results/<w>.warehouse-plans.log (slows the warehouse down)")
    e.add_argument("--batch-age-ms", dest="batch_age_ms", type=int,
                   help="buffer.max_age_ms for the warehouse runs (default: zetl's, 1000)")
    s = ap.add_argument_group("source")
    s.add_argument("--source-dsn", dest="source_dsn",
                   default=os.environ.get("ZETLBENCH_SOURCE_DSN") or None,
                   help="(or env ZETLBENCH_SOURCE_DSN, as `zetl bench --config F` sets it) "
                        "use this existing server instead of a throwaway cluster (needs "
                        "REPLICATION and CREATE; objects are prefixed zetlbench_ and dropped)")
    s.add_argument("--schema-prefix", dest="schema_prefix",
                   help="tenant schema prefix (default tenant_, or zetlbench_ with "
                        "--source-dsn)")
    o = ap.add_argument_group("output")
    o.add_argument("--results", default=os.path.join(HERE, "results"),
                   help="results directory (default bench/results)")
    o.add_argument("--keep", action="store_true",
                   help="keep the cluster directory, work directory and outputs")
    args = ap.parse_intermixed_args(argv)
    args.workloads = args.workloads or list(DEFAULT_WORKLOADS)
    args.zetl_bin = os.path.abspath(args.zetl_bin)
    bad = [w for w in args.workloads if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload {', '.join(bad)} (choose from {', '.join(WORKLOADS)})")
    if not os.access(args.zetl_bin, os.X_OK):
        ap.error(f"zetl binary {args.zetl_bin} not found or not executable (run make build)")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    return args


def main(argv):
    args = parse_args(argv)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    os.makedirs(args.results, exist_ok=True)
    results = []
    try:
        for w in args.workloads:
            b = Bench(args, w, args.zetl_bin, args.results)
            res = b.execute()
            path = os.path.join(args.results, f"{w}.json")
            with open(path, "w") as f:
                json.dump(res, f, indent=2)
                f.write("\n")
            plot_workload(res, os.path.join(args.results, f"{w}.svg"))
            plot_lag(res, os.path.join(args.results, f"{w}.lag.svg"))
            log(f"wrote {path}")
            results.append(res)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if results:
            plot_summary(args.results)
            print(markdown(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
