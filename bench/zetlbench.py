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
import datetime
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

    def __init__(self, keep=False):
        self.keep = keep
        self.pid = None
        self.dir = tempfile.mkdtemp(prefix="zetlbench-pg-")
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
        conf = dict(self.CONF)
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
        self.psql("CREATE DATABASE bench")
        self.dsn = f"host=127.0.0.1 port={self.port} dbname=bench user=postgres"

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
    ahead := done / rate - extract(epoch FROM clock_timestamp() - t0);
    IF ahead > 0 THEN
      PERFORM pg_sleep(ahead);
    END IF;
  END LOOP;
END
$bench$;
"""
        src.psql(sql)
        return {"rows_expected": rows,
                "transactions": math.ceil(rows / max(1, self.p["txn_rows"]))}


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
    enabled_by = None  # an args attribute that must be true, or None = always

    def __init__(self, bench):
        self.b = bench

    def prepare(self, rep):
        pass

    def run(self, rep):
        raise NotImplementedError

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

    def zetl(self, rep, cmd_prefix=(), tag="run"):
        wd = self.workdir(rep)
        env = dict(os.environ)
        env["ZETL_SOURCE_DSN"] = self.b.src.dsn
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
        report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                                 "--sort", "symbol,dso", "--percent-limit", "0.5", "-g", "none"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        by_dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                                 "--sort", "dso", "-g", "none"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        path = os.path.join(self.b.results, f"{self.b.wl.name}.perf.txt")
        with open(path, "wb") as f:
            f.write(b"# self time by shared object\n" + by_dso.stdout
                    + b"\n# self time by symbol (>= 0.5%)\n" + report.stdout)
        log(f"perf report written to {path}")
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
        self.publication = None
        self.cleanup = []
        self.work = tempfile.mkdtemp(prefix=f"zetlbench-{wl_name}-")

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
        measures = [m(self) for m in MEASUREMENTS
                    if m.enabled_by is None or getattr(args, m.enabled_by, False)]
        log(f"{self.wl.name}: {self.wl.description}")
        if self.external:
            self.src = ExistingSource(args.source_dsn)
            self.check_external()
        else:
            self.src = LocalCluster(keep=args.keep)
        try:
            return self._execute(measures)
        finally:
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
            f"{gen_s:.1f}s; end {lsn_text(self.end_lsn)}")

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
                            f"{r['rows_per_s']:.0f} rows/s, peak RSS {r['peak_rss_mb']} MB")
        best = {m.name: m.summarize(runs[m.name], self) for m in measures if runs[m.name]}
        for r in best.values():
            r.pop("rss_samples_kb", None)  # kept in "runs"

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
                "configured": {} if self.external else dict(LocalCluster.CONF),
                "settings": src.describe(),
            },
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
    git = subprocess.run(["git", "-C", HERE, "describe", "--always", "--dirty"],
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
                if "rows_per_s" not in r:
                    continue
                lines.append(f"| {res['workload']} | {name} | {r['repetition']} | "
                             f"{fmt(r['rows'])} | {fmt(r['wall_s'], 2)} | "
                             f"{fmt(r['rows_per_s'])} | {fmt(r['wal_mb_per_s'], 1)} | "
                             f"{fmt(r.get('cpu_s'), 2)} | {fmt(r['peak_rss_mb'], 1)} |")
    for res in results:
        if res["targets"]:
            t = res["targets"]
            lines.append("")
            lines.append(f"{res['workload']} targets: capture ratio {t['capture_ratio']:.2f} "
                         f"(>= {t['capture_ratio_min']}: "
                         f"{'met' if t['capture_ratio_met'] else 'NOT met'}), peak RSS "
                         f"{t['peak_rss_mb']} MB (< {t['peak_rss_mb_max']}: "
                         f"{'met' if t['peak_rss_met'] else 'NOT met'})")
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
            if "rows_per_s" in r:
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
set title "capture throughput (each run)"
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
    g.add_argument("--rate", type=float, help="mixed: target rows/s (default 5000)")
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
    m.add_argument("--timeout", type=float, default=7200, help="seconds per reader run")
    s = ap.add_argument_group("source")
    s.add_argument("--source-dsn", dest="source_dsn",
                   help="use this existing server instead of a throwaway cluster (needs "
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
    args.workloads = args.workloads or ["insert-1m"]
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
