"""One workload, start to end: source, slots, generation, every measurement, result JSON."""

import datetime
import os
import platform
import shutil
import subprocess
import tempfile
import time

from .util import HERE, log, lsn_text, pg_tool, qident, qlit, sha256_file
from .sources import ExistingSource, LocalCluster
from .procs import cluster_cpu_s
from .workloads import WORKLOADS
from .measure import MEASUREMENTS
from .warehouse import SAME_CLUSTER_EXTRA, Warehouse
from .snapshot import new_tenant_summary, snapshot_summary
from .kafka import kafka_summary


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
        med = {m.name: m.summarize(runs[m.name], self) for m in measures if runs[m.name]}
        for r in med.values():
            r.pop("rss_samples_kb", None)  # kept in "runs"
            if isinstance(r.get("lag"), dict):
                r["lag"] = {k: v for k, v in r["lag"].items() if k != "series"}  # in "runs"
        summary, targets = self.summarize(med, runs, gen_s, rows_stat)
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
                "selection": (f"median of {args.repeat} run(s) per reader: every figure in "
                              "'median' and 'summary' is the median of the runs' values (for "
                              "an even count the mean of the two middle ones), ratios are "
                              "ratios of medians (*_per_rep: each repetition's own); 'runs' "
                              "keeps every run; peak RSS is the highest of the runs; readers "
                              "alternate on the same WAL within a repetition"),
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
                            "during the run (not in cpu_s); ratio = median zetl_s3 rows/s / "
                            "median zetl rows/s (ratio_same_rep: per repetition)"),
                "zetl_kafka": ("--kafka: zetl run --once with a kafka section (brokers: a "
                               "fresh build/kafka-mock, one broker on 127.0.0.1, started before "
                               "and stopped by pid after each run; topic_prefix zetl; Avro "
                               "single-object encoding) and no archive; own slot over the same "
                               "WAL, run right after the archive-only zetl run of the same "
                               "repetition; wall clock from process start to exit (every batch "
                               "a committed Kafka transaction); messages = the change topics' "
                               "high watermarks (kcat -Q), rows = the sum of 'rows' of the "
                               "records in zetl._zetl_offsets (kcat -C); mock_cpu_s = the mock "
                               "process's CPU during the run (not in cpu_s); ratio = median "
                               "messages/s / median zetl (archive) rows/s, ratio_per_rep: per "
                               "repetition"),
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
            "median": med,
            "runs": runs,
        }

    def summarize(self, med, runs, gen_s, rows_stat):
        """summary and targets of the JSON, from the median figures of each reader (med) and
        every run (runs); ratios are ratios of medians, with the ratio of each repetition's
        own runs next to them (*_per_rep)."""
        wl = self.wl
        summary = {}
        if "baseline" in med and "zetl" in med:
            b, z = med["baseline"], med["zetl"]
            summary = {
                "rows": self.rows,
                "wal_mb": round(self.wal_bytes / 1e6, 2),
                "generate_s": round(gen_s, 2),
                "baseline_rows_per_s": b["rows_per_s"],
                "zetl_rows_per_s": z["rows_per_s"],
                "ratio_rows_per_s": round(z["rows_per_s"] / b["rows_per_s"], 3),
                "ratio_per_rep": per_rep_ratio(runs["zetl"], runs["baseline"]),
                "zetl_raw_mb_per_s": z["raw_mb_per_s"],
                "zetl_wal_mb_per_s": z["wal_mb_per_s"],
                "baseline_wal_mb_per_s": b["wal_mb_per_s"],
                "zetl_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["zetl"]),
                "zetl_cpu_s_per_million_rows": z.get("cpu_s_per_million_rows"),
                "zetl_compressed_bytes_per_row": z["compressed_bytes_per_row"],
                "rows_match": b["rows"] == z["rows"],
            }
            if "baseline_devnull" in med:
                d = med["baseline_devnull"]
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
        if "zetl_s3" in med and "zetl" in med:
            f, s3 = med["zetl"], med["zetl_s3"]
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
        kafka, t = kafka_summary(med, runs, self)
        if kafka:
            summary["kafka"] = kafka
            targets.update(t)
        if "zetl_e2e" in med:
            e = med["zetl_e2e"]
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
            if "bare_copy" in med:
                c = med["bare_copy"]
                e2e["bare_copy_rows_per_s"] = c["rows_per_s"]
                e2e["ratio_vs_bare_copy"] = round(e["rows_per_s"] / c["rows_per_s"], 3)
                e2e["ratio_vs_bare_copy_per_rep"] = per_rep_ratio(runs["zetl_e2e"],
                                                                  runs["bare_copy"])
                e2e["bare_copy_warehouse_cpu_s_per_million_rows"] = c.get(
                    "warehouse_cpu_s_per_million_rows")
            summary["e2e"] = e2e
            if wl.name.startswith("mixed"):
                targets.update({"e2e_rows_per_s_min": 50000,
                                "e2e_rows_per_s": e["rows_per_s"],
                                "e2e_met": e["rows_per_s"] >= 50000})
        if "zetl_lag" in med:
            l = med["zetl_lag"]
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
        if wl.kind == "snapshot":
            snap, t = snapshot_summary(med, runs, self)
            if snap:
                summary["snapshot"] = snap
                targets.update(t)
        if wl.kind == "new-tenant":
            nt = new_tenant_summary(med, runs, self)
            if nt:
                summary["new_tenant"] = nt
        if summary:
            summary["median_of_runs"] = self.args.repeat
        return summary, targets

    def row_stats(self):
        rows = self.src.psql(
            "SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del "
            "FROM pg_stat_user_tables WHERE schemaname LIKE "
            + qlit(self.prefix_schemas.replace("_", "\\_") + "%"))
        return {r[0]: int(r[1]) for r in rows}


def per_rep_ratio(runs_a, runs_b):
    """rows/s of a over rows/s of b, per repetition both ran in."""
    by_rep = {r["repetition"]: r for r in runs_b}
    return [round(r["rows_per_s"] / by_rep[r["repetition"]]["rows_per_s"], 3)
            for r in runs_a if r["repetition"] in by_rep
            and r.get("rows_per_s") and by_rep[r["repetition"]].get("rows_per_s")]


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
