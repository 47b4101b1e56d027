"""Capture measurements: pg_recvlogical (the baseline), zetl with a file or S3 archive, zetl under
perf."""

import json
import os
import shutil
import subprocess

from .util import HERE, log, lsn_text, pg_tool, qident, qlit
from .procs import run_timed, tail
from .pgoutput import count_pgoutput
from .measure import Measurement, measurement, rates
from .s3rver import S3_BUCKET, S3rverProcess


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
         "transactions": 0, "snapshot_rows": 0}
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
            s["snapshot_rows"] += man.get("snapshot_rows", 0)
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

    # The change measurements read the workload's WAL only: rows that predate the slot
    # (mixed's preload, pgbench -i) are not snapshotted (the warehouse runs seed them);
    # the snapshot measurements (snapshot.py) say "initial".
    snapshot = "never"

    def tenants_extra(self):
        """More source.tenants: keys (indented four spaces)."""
        return ""

    def source_extra(self):
        """More source: keys (indented two spaces), after tenants and slot."""
        return ""

    def config_text(self, rep):
        globs = ", ".join(json.dumps(self.b.prefix_schemas + "*") for _ in [0])
        return f"""# written by bench/zetlbench.py; source.dsn comes from ZETL_SOURCE_DSN
source:
  tenants:
    schemas: [{globs}]
{self.tenants_extra()}  slot: {self.slot_prefix(rep)}
  slot_groups: 1
  snapshot: {self.snapshot}
{self.source_extra()}buffer:
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
