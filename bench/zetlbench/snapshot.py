"""Snapshots: PostgreSQL's own COPY of the preloaded tables, zetl's initial snapshot (archive only
and into the warehouse, with the warehouse's bare COPY of the same rows), and a new tenant created
while zetl runs as a daemon (seconds until its rows are in the warehouse)."""

import datetime
import os
import random
import re
import resource
import shutil
import subprocess
import threading
import time

from .util import log, qident, qlit
from .procs import TimedProcess, tail
from .measure import Measurement, measurement, rates
from .capture import ZetlCapture, archive_stats
from .e2e import BareCopy, ZetlE2E


# zetl's log lines (common/log.c: "YYYY-MM-DD HH:MM:SS.mmm UTC [pid] LEVEL:  message").
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[\d+\] \w+:\s+(.*)$")
# replicator/snapwin.c, when a table's last chunk is durable in every sink.
SNAPSHOT_DONE = re.compile(r'^stream (\S+): snapshot of "(.*)"\."(.*)" done: (\d+) row\(s\) '
                           r'in ([0-9.]+) s')
# replicator/snapshot.c, when discovery (replicator/tenants.c) queues a new tenant's table,
# just before the tenant joins its slot group's publication.
SNAPSHOT_QUEUED = re.compile(r'^stream (\S+): snapshot of "(.*)"\."(.*)" queued')


def log_lines(path):
    """[(epoch seconds, message)] of a zetl log file."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = LOG_LINE.match(line.rstrip("\n"))
                if m:
                    ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
                    out.append((ts.replace(tzinfo=datetime.timezone.utc).timestamp(),
                                m.group(2)))
    except OSError:
        pass
    return out


def snapshot_tables(path):
    """The tables a zetl run snapshotted, from its log: [{table, rows, seconds, done_at}]."""
    out = []
    for ts, msg in log_lines(path):
        m = SNAPSHOT_DONE.match(msg)
        if m:
            out.append({"table": f"{m.group(2)}.{m.group(3)}", "stream": m.group(1),
                        "rows": int(m.group(4)), "seconds": float(m.group(5)), "done_at": ts})
    return out


def snapshot_figures(r, path):
    """Adds the snapshot-only figures of a zetl run to r: from the first table's start
    (its done time minus its duration, the duration logged to 0.1 s) to the last
    table's done time, i.e. without process start, slot creation and the final batch."""
    tables = snapshot_tables(path)
    r["snapshot_tables"] = [{k: v for k, v in t.items() if k != "done_at"} for t in tables]
    if tables:
        span = (max(t["done_at"] for t in tables)
                - min(t["done_at"] - t["seconds"] for t in tables))
        rows = sum(t["rows"] for t in tables)
        r["snapshot_s"] = round(span, 3)
        r["snapshot_logged_rows"] = rows
        r["snapshot_rows_per_s"] = round(rows / span, 1) if span > 0 else None
    return r


@measurement
class SourceCopy(Measurement):
    """PostgreSQL's own `COPY (SELECT <columns> FROM <tenant>.<table>) TO STDOUT` of every
    tenant table, through psql into /dev/null, over as many connections as zetl's
    source.snapshot_workers (one table per connection at a time, as zetl copies).
    Timed: from the first psql's start to the last one's exit (connections included)."""

    name = "copy_workers"
    label = "source COPY TO STDOUT, snapshot_workers connections"
    kinds = ("snapshot",)

    def connections(self):
        return self.b.wl.p["snapshot_workers"]

    def prepare(self, rep):
        if rep == 1:
            src = self.b.src
            self.tables = self.b.wl.tables(src)
            self.counts = {(s, t): int(src.value(f"SELECT count(*) FROM {qident(s)}.{qident(t)}"))
                           for s, t, _ in self.tables}

    def run(self, rep):
        src, b = self.b.src, self.b
        remaining = list(self.tables)
        lock = threading.Lock()
        per_table, errors = [], []

        def worker():
            while True:
                with lock:
                    if not remaining or errors:
                        return
                    s, t, cols = remaining.pop(0)
                sql = f"COPY (SELECT {', '.join(cols)} FROM {qident(s)}.{qident(t)}) TO STDOUT"
                t0 = time.monotonic()
                p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", src.dsn,
                                    "-c", sql], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, timeout=b.args.timeout)
                with lock:
                    if p.returncode != 0:
                        errors.append(f"{s}.{t}: {p.stderr.decode(errors='replace')[-500:]}")
                    per_table.append({"table": f"{s}.{t}", "rows": self.counts[(s, t)],
                                      "seconds": round(time.monotonic() - t0, 3)})

        n = max(1, min(self.connections(), len(self.tables)))
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s0 = b.src_cpu_s()
        t0 = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.monotonic() - t0
        s1 = b.src_cpu_s()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if errors:
            raise RuntimeError("source COPY failed: " + "; ".join(errors))
        r = {"wall_s": round(wall, 4), "rows": sum(self.counts.values()), "connections": n,
             "tables": per_table, "peak_rss_kb": 0,
             "copy": "psql -c 'COPY (SELECT <columns> FROM <table>) TO STDOUT' > /dev/null",
             # psql's own CPU (the clients; threads of this process reap only them meanwhile)
             "cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3)}
        if s0 is not None:
            r["source_cpu_s"] = round(s1 - s0, 2)
        r = rates(r, b)
        r["peak_rss_mb"] = None  # several short psql processes: not a figure
        return r


@measurement
class SourceCopySingle(SourceCopy):
    """The same over one connection (every table one after another)."""

    name = "copy_single"
    label = "source COPY TO STDOUT, 1 connection"

    @classmethod
    def enabled(cls, args, wl):
        return super().enabled(args, wl) and wl.p.get("snapshot_workers") != 1

    def connections(self):
        return 1

    def prepare(self, rep):
        if rep == 1:
            super().prepare(rep)


class SnapshotConfig:
    """Mixin: zetl with source.snapshot initial and the workload's snapshot_workers; the slot
    is made by the measured run itself (its first start), not beforehand."""

    snapshot = "initial"

    def source_extra(self):
        return f"  snapshot_workers: {self.b.wl.p['snapshot_workers']}\n"

    def write_config(self, rep):
        wd = self.workdir(rep)
        os.makedirs(wd, exist_ok=True)
        with open(os.path.join(wd, "zetl.yaml"), "w") as f:
            f.write(self.config_text(rep))
        name = f"{self.slot_prefix(rep)}_0"
        self.b.on_cleanup(f"SELECT pg_drop_replication_slot({qlit(name)}) "
                          f"FROM pg_replication_slots WHERE slot_name = {qlit(name)}")
        self.b.on_cleanup(f"DROP PUBLICATION IF EXISTS {qident(name)}")


@measurement
class ZetlSnapshot(SnapshotConfig, ZetlCapture):
    """zetl run --once on a fresh slot (archive file://): the initial snapshot copies every
    preloaded row; timed from process start to exit (slot creation, the copy, the last
    batch's archive included). Snapshot-only time from the log's per-table lines."""

    name = "zetl_snapshot"
    label = "zetl initial snapshot (archive)"
    kinds = ("snapshot",)
    prepare_rank = 1

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}snap{rep}"

    def workdir(self, rep):
        return os.path.join(self.b.work, f"snap-{rep}")

    def prepare(self, rep):
        self.write_config(rep)

    def run(self, rep):
        s0 = self.b.src_cpu_s()
        r = self.zetl(rep, tag="snapshot")
        s1 = self.b.src_cpu_s()
        root = os.path.join(self.workdir(rep), "archive")
        a = archive_stats(root)
        r.update(a)
        if s0 is not None:
            r["source_cpu_s"] = round(s1 - s0, 2)
        r["rows_match"] = a["rows"] == a["snapshot_rows"] == self.b.rows
        r["raw_mb_per_s"] = round(a["raw_bytes"] / 1e6 / r["wall_s"], 2)
        r["compressed_bytes_per_row"] = round(a["file_bytes"] / a["rows"], 2) if a["rows"] else None
        r["archive_bytes_per_row"] = round(a["archive_bytes"] / a["rows"], 2) if a["rows"] else None
        snapshot_figures(r, os.path.join(self.workdir(rep), "zetl-snapshot.stderr"))
        if not r["rows_match"]:
            log(f"  zetl archived {a['rows']} rows ({a['snapshot_rows']} snapshot rows), "
                f"expected {self.b.rows}")
        if not self.b.args.keep:
            shutil.rmtree(root, ignore_errors=True)
        return rates(r, self.b)


@measurement
class ZetlSnapshotE2E(SnapshotConfig, ZetlE2E):
    """zetl run --once on a fresh slot into an empty warehouse schema: the initial snapshot
    archived and applied; then zetl verify. Named zetl_e2e: the end-to-end summary, table
    and the bare COPY of the same archive (SnapshotBareCopy) take it as they take the
    change workloads' end-to-end run."""

    name = "zetl_e2e"
    label = "zetl initial snapshot end to end (archive + warehouse)"
    kinds = ("snapshot",)

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}snape2e{rep}"

    def workdir(self, rep):
        return os.path.join(self.b.work, f"snape2e-{rep}")

    def wh_schema(self, rep):
        return f"{self.b.prefix_objects}snape2e{rep}"

    def prepare(self, rep):
        self.b.wh.cleanup.append(f"DROP SCHEMA IF EXISTS {qident(self.wh_schema(rep))} CASCADE")
        self.write_config(rep)
        self.seeded_rows = 0  # the snapshot brings every row

    def run(self, rep):
        r = super().run(rep)
        return snapshot_figures(r, os.path.join(self.workdir(rep), "zetl-e2e.stderr"))


@measurement
class SnapshotBareCopy(BareCopy):
    """The warehouse's bare COPY of the snapshot's archive (after ZetlSnapshotE2E)."""

    kinds = ("snapshot",)


@measurement
class NewTenant(SnapshotConfig, ZetlE2E):
    """zetl run as a daemon into the warehouse (source.tenants.refresh_ms from the workload),
    started before the workload, the existing tenants snapshotted first. Each repetition
    creates one new tenant schema with its table and rows in one transaction and polls
    the warehouse every POLL_S until all its rows are there."""

    name = "zetl_new_tenant"
    label = "zetl daemon, new tenant to warehouse"
    kinds = ("new-tenant",)
    enabled_by = None
    live = True
    POLL_S = 0.1
    daemon = None

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}nt"

    def workdir(self, rep):
        return os.path.join(self.b.work, "nt")

    def wh_schema(self, rep):
        return f"{self.b.prefix_objects}nt"

    def tenants_extra(self):
        return f"    refresh_ms: {self.b.wl.p['refresh_ms']}\n"

    def prepare(self, rep):
        if rep == 1:
            self.b.wh.cleanup.append(f"DROP SCHEMA IF EXISTS {qident(self.wh_schema(1))} "
                                     "CASCADE")
            self.write_config(1)
            self.seeded_rows = 0

    def stderr_path(self):
        return os.path.join(self.workdir(1), "zetl-daemon.stderr")

    def wh_count(self, schema):
        """(rows of the tenant in the warehouse's users table, the warehouse's clock)."""
        got = self.b.wh.psql(f"SELECT count(*), extract(epoch FROM clock_timestamp()) FROM "
                             f"{qident(self.wh_schema(1))}.users WHERE tenant_id = {qlit(schema)}",
                             check=False)
        return (int(got[0][0]), float(got[0][1])) if got else (0, time.time())

    def live_start(self):
        b, wl = self.b, self.b.wl
        b.wh.before_run()
        self.daemon = TimedProcess([b.zetl_bin, "run", "--config",
                                    os.path.join(self.workdir(1), "zetl.yaml")],
                                   cwd=self.workdir(1), env=self.env(),
                                   stderr_path=self.stderr_path())
        # Ready: the existing tenants' initial snapshot is in the warehouse.
        want = wl.p["preload"]
        deadline = time.time() + b.args.timeout
        for s in wl.schemas:
            while self.wh_count(s)[0] < want:
                if not self.daemon.alive() or time.time() > deadline:
                    self.daemon.stop()
                    raise RuntimeError("zetl daemon did not snapshot the existing tenants:\n"
                                       + tail(self.stderr_path()))
                time.sleep(0.2)
        log(f"  zetl daemon streaming, {len(wl.schemas)} existing tenant(s) in the warehouse")

    def live_finish(self):
        pass

    def run(self, rep):
        b, wl = self.b, self.b.wl
        schema = wl.new_tenant_schema(b.prefix_schemas, rep)
        if b.external:
            b.src.cleanup_sql.append(f"DROP SCHEMA IF EXISTS {qident(schema)} CASCADE")
        rows = wl.p["rows"]
        # Discovery runs every refresh_ms: back-to-back repetitions would commit at the
        # same phase of that cycle each time. A seeded random pause of 0..refresh_ms
        # first puts each commit at a random point of it.
        pause = random.Random(b.args.seed * 1000 + rep).uniform(0, wl.p["refresh_ms"] / 1000)
        time.sleep(pause)
        # The server's clock right after the COMMIT, in the same session: the start.
        got = b.src.psql(wl.new_tenant_sql(schema)
                         + "SELECT extract(epoch FROM clock_timestamp());\n",
                         timeout=b.args.timeout)
        committed = float(got[-1][0])
        deadline = time.time() + b.args.timeout
        polls = 0
        while True:
            n, seen = self.wh_count(schema)
            polls += 1
            if n >= rows:
                break
            if not self.daemon.alive():
                raise RuntimeError("zetl daemon exited:\n" + tail(self.stderr_path()))
            if time.time() > deadline:
                raise RuntimeError(f"{schema}: {n} of {rows} rows in the warehouse after "
                                   f"{b.args.timeout} s")
            time.sleep(self.POLL_S)
        visible, how = seen, f"poll of the warehouse every {self.POLL_S} s (<= that late)"
        if b.wh.commit_ts:
            v = b.wh.value(f"SELECT extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) "
                           f"FROM {qident(self.wh_schema(1))}.users WHERE tenant_id = "
                           f"{qlit(schema)}")
            if v:
                visible, how = float(v), "warehouse commit timestamp of the last rows' apply"
        r = {"rows": n, "wall_s": round(visible - committed, 4), "tenant": schema,
             "seconds_to_warehouse": round(visible - committed, 4),
             "seconds_to_poll": round(seen - committed, 4), "polls": polls,
             "end": how, "start": "source clock_timestamp() right after the COMMIT",
             "refresh_ms": wl.p["refresh_ms"], "pause_before_s": round(pause, 3),
             "peak_rss_kb": 0}
        r.update(self.phases(schema, committed, visible))
        if rep == b.args.repeat:
            r["verify"] = self.verify(1, daemon_running=True)
            d = self.daemon.stop()
            self.daemon = None
            r["daemon"] = {k: d[k] for k in ("exit_code", "wall_s", "cpu_s")}
            r["daemon"]["peak_rss_mb"] = round(d["peak_rss_kb"] / 1024, 1)
            r["rss_samples_kb"] = d["rss_samples_kb"]  # the daemon's life, for the plot
        r = rates(r, b)
        r["peak_rss_mb"] = None  # the daemon's: in "daemon" of the last repetition
        log(f"  {schema}: {n} rows in the warehouse {r['seconds_to_warehouse']:.2f} s after "
            f"the commit (found after {r.get('discovered_s')} s, snapshot "
            f"{r.get('snapshot_s')} s)")
        return r

    def phases(self, schema, committed, visible):
        """Where the time went, from the daemon's log: the tenant found (its snapshot
        queued, just before it joins the publication: up to refresh_ms after the commit),
        from then until its rows were visible (the copy, the batch, the apply), and its
        snapshot done (durable in every sink, the warehouse included)."""
        out = {}
        for ts, msg in log_lines(self.stderr_path()):
            m = SNAPSHOT_QUEUED.match(msg)
            if m and m.group(2) == schema and "discovered_s" not in out:
                out["discovered_s"] = round(ts - committed, 3)
            m = SNAPSHOT_DONE.match(msg)
            if m and m.group(2) == schema:
                out["snapshot_s"] = float(m.group(5))
                out["snapshot_done_s"] = round(ts - committed, 3)
                out["after_snapshot_done_s"] = round(visible - ts, 3)
        if "discovered_s" in out:
            out["after_discovery_s"] = round(visible - committed - out["discovered_s"], 3)
        return out

    def close(self):
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None


def snapshot_summary(med, runs, b):
    """summary["snapshot"] and its target: zetl's initial snapshot against the source's own
    COPY with the same number of connections (issue 10: >= 0.8)."""
    z, c = med.get("zetl_snapshot"), med.get("copy_workers")
    if z is None or c is None:
        return {}, {}
    c1 = med.get("copy_single")
    by_rep = {r["repetition"]: r for r in runs["copy_workers"]}
    s = {
        "rows": b.rows,
        "tables": len(c.get("tables") or []),
        "snapshot_workers": b.wl.p["snapshot_workers"],
        "copy_rows_per_s": c["rows_per_s"],
        "copy_connections": c.get("connections"),
        "copy_single_rows_per_s": c1["rows_per_s"] if c1 else None,
        "zetl_rows_per_s": z["rows_per_s"],
        "zetl_wall_s": z["wall_s"],
        "zetl_snapshot_only_rows_per_s": z.get("snapshot_rows_per_s"),
        "ratio_vs_copy": round(z["rows_per_s"] / c["rows_per_s"], 3),
        "ratio_vs_copy_single": round(z["rows_per_s"] / c1["rows_per_s"], 3) if c1 else None,
        "ratio_vs_copy_per_rep": [round(r["rows_per_s"] / by_rep[r["repetition"]]["rows_per_s"], 3)
                                  for r in runs["zetl_snapshot"] if r["repetition"] in by_rep],
        "zetl_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["zetl_snapshot"]),
        "zetl_cpu_s_per_million_rows": z.get("cpu_s_per_million_rows"),
        "zetl_source_cpu_s": z.get("source_cpu_s"),
        "copy_source_cpu_s": c.get("source_cpu_s"),
        "archive_bytes_per_row": z.get("archive_bytes_per_row"),
        "rows_match": all(r["rows_match"] for r in runs["zetl_snapshot"]),
        "median_of_runs": z["median_of_runs"],
    }
    if s["zetl_snapshot_only_rows_per_s"]:
        s["ratio_snapshot_only_vs_copy"] = round(s["zetl_snapshot_only_rows_per_s"]
                                                 / c["rows_per_s"], 3)
    targets = {"snapshot_ratio_min": 0.8, "snapshot_ratio": s["ratio_vs_copy"],
               "snapshot_connections": s["copy_connections"],
               "snapshot_met": s["ratio_vs_copy"] >= 0.8 and s["rows_match"]}
    return s, targets


def new_tenant_summary(med, runs, b):
    """summary["new_tenant"]: seconds from the new tenant's commit to all rows in the
    warehouse, the median of the repetitions (one new tenant each)."""
    n = med.get("zetl_new_tenant")
    if n is None:
        return {}
    rs = runs["zetl_new_tenant"]
    last = rs[-1]
    return {
        "rows": b.wl.p["rows"],
        "refresh_ms": b.wl.p["refresh_ms"],
        "seconds": n["seconds_to_warehouse"],
        "seconds_runs": [r["seconds_to_warehouse"] for r in rs],
        "seconds_min": min(r["seconds_to_warehouse"] for r in rs),
        "seconds_max": max(r["seconds_to_warehouse"] for r in rs),
        "discovered_s": n.get("discovered_s"),
        "snapshot_s": n.get("snapshot_s"),
        "after_discovery_s": n.get("after_discovery_s"),
        "after_snapshot_done_s": n.get("after_snapshot_done_s"),
        "end": n.get("end"),
        "verify_exit_code": (last.get("verify") or {}).get("exit_code"),
        "daemon": last.get("daemon"),
        "median_of_runs": n["median_of_runs"],
    }
