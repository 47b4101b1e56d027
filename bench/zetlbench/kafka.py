"""Kafka: zetl publishing every change to build/kafka-mock (librdkafka's mock cluster on
loopback), against zetl's archive-only capture of the same WAL in the same repetition; the
published messages counted by kcat from the broker and from zetl's offsets topic."""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import time

from .util import HERE, log
from .procs import CLK_TCK, proc_cpu_ticks, tail
from .measure import measurement, median, rates
from .capture import ZetlCapture, perf_report


TOPIC_PREFIX = "zetl"
# zetl's own topics (docs/kafka.md): every other topic under the prefix holds changes.
# One offsets topic per stream: <prefix>._zetl_offsets.<stream> (docs/kafka.md).
OFFSETS_TOPIC = TOPIC_PREFIX + "._zetl_offsets"
SCHEMAS_TOPIC = TOPIC_PREFIX + "._zetl_schemas"
# Messages whose key and value sizes are sampled from the start of what the mock kept.
SIZE_SAMPLE = 20000
# kcat -Q answers "<topic> [<partition>] offset <n>".
KCAT_OFFSET = re.compile(r"^(\S+) \[(\d+)\] offset (-?\d+)$")


def kafka_mock_path(zetl_bin):
    """build/kafka-mock: next to the zetl binary the harness runs (ZETL_KAFKA_MOCK overrides,
    as in tests/integration/kafkatest.py)."""
    return os.environ.get("ZETL_KAFKA_MOCK") or os.path.join(os.path.dirname(zetl_bin),
                                                             "kafka-mock")


def kcat_path():
    path = shutil.which("kcat")
    if not path:
        raise RuntimeError("kcat not found: run scripts/deps.sh (it reads back what zetl "
                           "published)")
    return path


class KafkaMockProcess:
    """build/kafka-mock with one broker on a free loopback port: a fresh cluster, so every
    run starts with no topics, and the mock's per-partition retention (the newest ~5 MB)
    never carries one run's messages into the next. Stopped by its pid (SIGTERM, then
    SIGKILL); --exit-with-parent stops it if the harness dies first."""

    def __init__(self, binary, stderr_path, start_timeout=20):
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"{binary} not found: build the kafka-mock target (make build)")
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen([binary, "--exit-with-parent"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err)
        self.pid = self.proc.pid
        try:
            self.bootstrap = self._first_line(start_timeout)
        except Exception:
            self.stop()
            raise
        if not re.fullmatch(r"127\.0\.0\.1:\d+", self.bootstrap):
            self.stop()
            raise RuntimeError(f"kafka-mock printed an unexpected first line "
                               f"{self.bootstrap!r}:\n{tail(stderr_path)}")

    def _first_line(self, timeout):
        buf, fd = b"", self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError("kafka-mock did not print its bootstrap servers:\n"
                                   + tail(self.stderr_path))
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError("kafka-mock closed stdout before its bootstrap servers")
                buf += chunk
        return buf.split(b"\n", 1)[0].decode().strip()

    def cpu_s(self):
        return proc_cpu_ticks(self.pid, children=False) / CLK_TCK

    def peak_rss_kb(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()
        self.proc = None


def kcat(bootstrap, args, timeout=300):
    p = subprocess.run([kcat_path(), "-b", bootstrap, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"kcat {' '.join(args)} exited {p.returncode}: "
                           f"{p.stderr.decode(errors='replace')[-1000:]}")
    return p.stdout.decode(errors="replace")


def topic_partitions(bootstrap):
    """{topic: partitions} of every topic, from the all-topics listing (which, unlike
    naming a topic, creates nothing on the mock)."""
    meta = json.loads(kcat(bootstrap, ["-L", "-J"]))
    return {t["topic"]: len(t["partitions"]) for t in meta["topics"]
            if not t["topic"].startswith("__")}


def partition_offsets(bootstrap, parts, which):
    """{(topic, partition): offset}: which = -1 the high watermark (the next offset: every
    message ever appended, also those the mock dropped since), -2 the log start (the
    oldest offset the mock still holds)."""
    args = ["-Q"]
    for t, n in sorted(parts.items()):
        for p in range(n):
            args += ["-t", f"{t}:{p}:{which}"]
    out = {}
    for line in kcat(bootstrap, args).splitlines():
        m = KCAT_OFFSET.match(line.strip())
        if m:
            out[(m.group(1), int(m.group(2)))] = int(m.group(3))
    want = sum(parts.values())
    if len(out) != want:
        raise RuntimeError(f"kcat -Q answered {len(out)} of {want} partitions")
    return out


def is_offsets_topic(topic):
    return topic.startswith(OFFSETS_TOPIC + ".")


def offsets_records(bootstrap, topics):
    """The JSON values of the streams' offsets topics (one record per published batch)."""
    recs = []
    for t in sorted(topics):
        out = kcat(bootstrap, ["-C", "-t", t, "-o", "beginning", "-e", "-q", "-f", "%s\\n"])
        recs += [json.loads(line) for line in out.splitlines() if line.strip()]
    return recs


def message_sizes(bootstrap, topics):
    """(average key bytes, average value bytes, messages sampled) over the first
    SIZE_SAMPLE messages the mock still holds in the change topics."""
    keys = vals = n = 0
    for t in sorted(topics):
        out = kcat(bootstrap, ["-C", "-t", t, "-o", "beginning", "-e", "-q",
                               "-c", str(SIZE_SAMPLE - n), "-f", "%K %S\\n"])
        for line in out.splitlines():
            k, v = line.split()
            keys += max(0, int(k))
            vals += max(0, int(v))
            n += 1
        if n >= SIZE_SAMPLE:
            break
    return (round(keys / n, 1) if n else None, round(vals / n, 1) if n else None, n)


def published(bootstrap):
    """What the mock holds after a run: messages per change topic (from the high
    watermarks: every message appended, whether the mock's ~5 MB per partition still
    keeps it or not), what it still keeps, and zetl's offsets records."""
    parts = topic_partitions(bootstrap)
    changes = {t: n for t, n in parts.items() if not is_offsets_topic(t) and t != SCHEMAS_TOPIC}
    hw = partition_offsets(bootstrap, changes, -1) if changes else {}
    start = partition_offsets(bootstrap, changes, -2) if changes else {}
    recs = offsets_records(bootstrap, [t for t in parts if is_offsets_topic(t)])
    position_msgs = sum(last - first + 1 for rec in recs
                        for t, topic in rec.get("positions", {}).items() if t in changes
                        for first, last in topic.values())
    kb, vb, sampled = message_sizes(bootstrap, changes) if changes else (None, None, 0)
    return {
        "topics": parts,
        "messages": sum(hw.values()),
        "messages_by_topic": {t: sum(v for (tt, _), v in hw.items() if tt == t) for t in changes},
        "messages_kept_by_mock": sum(hw[k] - start[k] for k in hw),
        "offsets_records": len(recs),
        "offsets_rows": sum(rec.get("rows", 0) for rec in recs),
        "offsets_position_messages": position_msgs,
        "avg_key_bytes": kb,
        "avg_value_bytes": vb,
        "sizes_sampled": sampled,
    }


@measurement
class ZetlKafka(ZetlCapture):
    """zetl run --once publishing to Kafka only (kafka section, no archive): a fresh
    build/kafka-mock per run, its own slot over the same WAL, right after the archive-only
    zetl run of the same repetition. Timed from zetl's start to its exit (every batch a
    committed Kafka transaction by then); the messages are then counted from the broker."""

    name = "zetl_kafka"
    label = "zetl to Kafka (kafka-mock)"
    enabled_by = "kafka"
    prepare_rank = 1
    mock = None

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}zk{rep}"

    def workdir(self, rep):
        return os.path.join(self.b.work, f"zk-{rep}")

    def config_text(self, rep):
        text = super().config_text(rep)
        old = "archive:\n  url: file://./archive\n"
        assert old in text
        return text.replace(old, f"kafka:\n  brokers: \"{self.mock.bootstrap}\"\n"
                                 f"  topic_prefix: {TOPIC_PREFIX}\n")

    def start_mock(self, rep, tag):
        self.mock = KafkaMockProcess(kafka_mock_path(self.b.zetl_bin),
                                     os.path.join(self.workdir(rep), f"kafka-mock-{tag}.stderr"))

    def stop_mock(self):
        if self.mock is not None:
            self.mock.stop()
            self.mock = None

    def prepare(self, rep):
        # zetl's first start checks the brokers answer before it makes its slot and
        # publication: a mock of its own, stopped once the slot exists.
        os.makedirs(self.workdir(rep), exist_ok=True)
        self.start_mock(rep, "setup")
        try:
            super().prepare(rep)
            got = published(self.mock.bootstrap)
            if got["messages"]:
                raise RuntimeError(f"zetl setup run published {got['messages']} messages: "
                                   "the tenant tables were not empty")
        finally:
            self.stop_mock()

    def write_config(self, rep):
        with open(os.path.join(self.workdir(rep), "zetl.yaml"), "w") as f:
            f.write(self.config_text(rep))

    def run(self, rep, cmd_prefix=(), tag="run"):
        self.start_mock(rep, tag)
        try:
            self.write_config(rep)  # the config names the broker: a new mock, a new config
            cpu0 = self.mock.cpu_s()
            r = self.zetl(rep, cmd_prefix=cmd_prefix, tag=tag)
            r["mock_cpu_s"] = round(self.mock.cpu_s() - cpu0, 3)
            got = published(self.mock.bootstrap)
            kb = self.mock.peak_rss_kb()
            r["mock_peak_rss_mb"] = round(kb / 1024, 1) if kb else None
        finally:
            self.stop_mock()
        r.update(got)
        # rows: the changes zetl says it published (its offsets records); messages: what
        # the broker appended (one per insert or update; a delete adds its tombstone).
        r["rows"] = got["offsets_rows"]
        r["rows_source"] = ("sum of \"rows\" of the records in " + OFFSETS_TOPIC + ".<stream>"
                            + " (read back with kcat)")
        r["messages_source"] = "sum of the change topics' high watermarks (kcat -Q ...:-1)"
        r["rows_match"] = got["offsets_rows"] == self.b.rows
        r["messages_match"] = got["messages"] == got["offsets_position_messages"]
        if not (r["rows_match"] and r["messages_match"]):
            log(f"  the broker holds {got['messages']} messages, zetl's offsets records say "
                f"{got['offsets_rows']} rows in {got['offsets_position_messages']} messages, "
                f"the workload made {self.b.rows} rows")
        r["format"] = "avro (single-object encoding, no schema registry)"
        r["bootstrap"] = "kafka-mock, 1 broker, 127.0.0.1 (a fresh one for this run)"
        r = rates(r, self.b)
        r["messages_per_s"] = round(r["messages"] / r["wall_s"], 1) if r["wall_s"] > 0 else None
        if r["messages"]:
            r["mock_cpu_s_per_million_messages"] = round(r["mock_cpu_s"] / r["messages"] * 1e6, 3)
        same = [x for x in self.b.runs.get("zetl", []) if x["repetition"] == rep]
        if same and same[0].get("rows_per_s") and r["messages_per_s"]:
            r["ratio_vs_archive_same_rep"] = round(r["messages_per_s"] / same[0]["rows_per_s"], 3)
        return r

    def close(self):
        self.stop_mock()


@measurement
class ZetlKafkaPerf(ZetlKafka):
    """--perf with --kafka: one extra zetl-to-Kafka run under `perf record -g`; a hot-spot
    report (results/<w>.kafka.perf.txt), not a figure."""

    name = "zetl_kafka_perf"
    label = "zetl to Kafka under perf"
    enabled_by = ("kafka", "perf")

    def slot_prefix(self, rep):
        return f"{self.b.prefix_objects}zkperf{rep}"

    def workdir(self, rep):
        return os.path.join(self.b.work, f"zkperf-{rep}")

    def prepare(self, rep):
        if rep == 1:
            super().prepare(rep)

    def run(self, rep):
        if rep != 1:
            return None
        data = os.path.join(self.workdir(rep), "perf.data")
        r = super().run(rep, cmd_prefix=["perf", "record", "-g", "-F", "999", "-o", data, "--"],
                        tag="perf")
        path = os.path.join(self.b.results, f"{self.b.wl.name}.kafka.perf.txt")
        perf_report(data, path)
        return {"wall_s": r["wall_s"], "rows": 0, "messages": r["messages"],
                "report": os.path.relpath(path, HERE)}

    @staticmethod
    def summarize(runs, b):
        return runs[0]


def kafka_summary(med, runs, b):
    """summary["kafka"] and its targets: messages/s published to the mock (>= 500,000), the
    ratio to the archive-only capture of the same WAL (>= 0.8), zetl's peak RSS (< 64 MB)."""
    k, z = med.get("zetl_kafka"), med.get("zetl")
    if k is None or z is None:
        return {}, {}
    ks = runs["zetl_kafka"]
    per_rep = [r["ratio_vs_archive_same_rep"] for r in ks if "ratio_vs_archive_same_rep" in r]
    s = {
        "rows": b.rows,
        "messages": k["messages"],
        "kafka_messages_per_s": k["messages_per_s"],
        "kafka_messages_per_s_runs": [r["messages_per_s"] for r in ks],
        "archive_rows_per_s": z["rows_per_s"],
        "ratio": round(k["messages_per_s"] / z["rows_per_s"], 3),
        "ratio_per_rep": per_rep,
        "ratio_per_rep_median": round(median(per_rep), 3) if per_rep else None,
        "kafka_wall_s": k["wall_s"],
        "archive_wall_s": z["wall_s"],
        "kafka_peak_rss_mb": max(r["peak_rss_mb"] for r in ks),
        "archive_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["zetl"]),
        "kafka_cpu_s_per_million_messages": (round(k["cpu_s"] / k["messages"] * 1e6, 3)
                                             if k.get("messages") else None),
        "archive_cpu_s_per_million_rows": z.get("cpu_s_per_million_rows"),
        "mock_cpu_s": k.get("mock_cpu_s"),
        "mock_cpu_s_per_million_messages": k.get("mock_cpu_s_per_million_messages"),
        "transactions": k.get("offsets_records"),
        "avg_key_bytes": k.get("avg_key_bytes"),
        "avg_value_bytes": k.get("avg_value_bytes"),
        "topics": k.get("topics"),
        "rows_match": all(r["rows_match"] for r in ks),
        "messages_match": all(r["messages_match"] for r in ks),
        "median_of_runs": k["median_of_runs"],
    }
    rss = s["kafka_peak_rss_mb"]
    targets = {"kafka_messages_per_s_min": 500000,
               "kafka_messages_per_s": s["kafka_messages_per_s"],
               "kafka_messages_per_s_met": s["kafka_messages_per_s"] >= 500000,
               "kafka_ratio_min": 0.8, "kafka_ratio": s["ratio"],
               "kafka_ratio_met": (s["ratio"] >= 0.8 and s["rows_match"]
                                   and s["messages_match"]),
               "kafka_peak_rss_mb_max": 64, "kafka_peak_rss_mb": rss,
               "kafka_peak_rss_met": rss < 64}
    return s, targets
