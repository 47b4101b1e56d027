"""Sources: a throwaway local cluster, or an existing server (--source-dsn or a warehouse DSN)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from .util import as_pg_user, log, lsn_int, lsn_text, pg_tool, qident, qlit


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


class DsnServer(Source):
    def __init__(self, dsn):
        self.dsn = dsn
