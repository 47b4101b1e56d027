"""The PostgreSQL warehouse of the end-to-end measurements."""

import os
import shutil

from .util import log
from .sources import DsnServer, LocalCluster
from .procs import cluster_cpu_s


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


def warehouse_type(t):
    """The manifest's type text as a warehouse column type (docs/warehouse.md)."""
    if t.startswith("_"):
        return t[1:] + "[]"
    if "." in t or t.startswith("oid:"):
        return "text"
    return t
