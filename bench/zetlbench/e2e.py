"""End to end: zetl applying to the warehouse, the bare COPY of the same rows, commit-to-warehouse
lag."""

import bisect
import csv
import datetime
import io
import json
import os
import shutil
import subprocess
import threading
import time

from .util import HERE, log, lsn_text, qident, qlit
from .procs import TimedProcess, run_timed, tail
from .measure import Measurement, measurement, rates
from .capture import ZetlCapture, archive_stats, perf_report
from .warehouse import warehouse_type


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
