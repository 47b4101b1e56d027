"""Kafka: change events published by zetl run to build/kafka-mock, read back
with independent clients (confluent_kafka, python3-avro, kcat), and zetl
load's path from Kafka into a warehouse, compared with the source in the
test itself.

librdkafka 2.0.2's mock does not hide the messages of uncommitted
transactions from read_committed consumers (docs/kafka.md): committed() tells
them apart the way a broker would, from the positions of the committed
<prefix>._zetl_offsets records.
"""

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import threading
import time

from zetltest import ZETL_BIN, config, main, run_zetl, SourceAndWarehouse, Zetl
import kafkatest
from kafkatest import KafkaMock, SchemaRegistry, consume

PREFIX = "zetl"
OFFSETS = PREFIX + "._zetl_offsets"
SCHEMAS = PREFIX + "._zetl_schemas"

TYPES_COLS = ["id", "i2", "i4", "i8", "n", "f4", "f8", "t", "b", "bo", "d", "ts", "tz", "iv",
              "u", "j", "jb", "ai", "at", "m"]


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def offsets_records(bootstrap, timeout=30):
    """Every stream's records (<prefix>._zetl_offsets.<stream>, one topic per stream)."""
    topics = [t for t in kafkatest.list_topics(bootstrap) if t.startswith(OFFSETS + ".")]
    if not topics:
        return []
    msgs = consume(bootstrap, topics, timeout=timeout)
    return [json.loads(m.value) for m in msgs if m.value is not None]


def committed(bootstrap, topics, timeout=30, schemas=None, registry=None):
    """The decoded (message, key, value) of `topics` that a committed batch
    wrote (see the module doc): the offset lies in a range that a committed
    record of the message's own stream (source.name) names, since the streams
    of several slot groups write to the same partitions.  Tombstones, which
    name no stream, are left out."""
    ranges = {}
    for rec in offsets_records(bootstrap, timeout):
        for topic, parts in rec["positions"].items():
            for p, (lo, hi) in parts.items():
                ranges.setdefault((rec["stream"], topic, int(p)), []).append((lo, hi))
    if schemas is None and registry is None:
        schemas = schema_table(bootstrap)
    out = []
    for m, key, val in decode_all(consume(bootstrap, topics, timeout=timeout), schemas, registry):
        if val is None:
            continue
        rs = ranges.get((val["source"]["name"], m.topic, m.partition), [])
        if any(lo <= m.offset <= hi for lo, hi in rs):
            out.append((m, key, val))
    return out


def schema_table(bootstrap):
    texts = [m.value.decode() for m in consume(bootstrap, SCHEMAS) if m.value is not None]
    return kafkatest.fingerprint_table(texts)


def decode_all(msgs, schemas=None, registry=None):
    """(key, value) data of each message; value None for a tombstone."""
    out = []
    for m in msgs:
        if registry is not None:
            key = kafkatest.decode_confluent(m.key, registry)[1] if m.key else None
            val = kafkatest.decode_confluent(m.value, registry)[1] if m.value else None
        else:
            key = kafkatest.decode_single_object(m.key, schemas)[1] if m.key else None
            val = kafkatest.decode_single_object(m.value, schemas)[1] if m.value else None
        out.append((m, key, val))
    return out


def pg_text(v):
    """What the source's text output is for an Avro value (None stays None)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    return str(v)


class KafkaBase(SourceAndWarehouse):
    WORK_PREFIX = "zetl-kafka-"

    def setUp(self):
        super().setUp()
        self.kafka = KafkaMock(brokers=1)
        self.registry = None

    def tearDown(self):
        Zetl.kill_all()
        for p in getattr(self, "loaders", []):
            if p.poll() is None:
                p.kill()
                p.wait()
        KafkaMock.stop_all()
        if self.registry is not None:
            self.registry.stop()
        self.src.drop_slots(self.db)
        self.src.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        self.whc.psql(f'DROP DATABASE "{self.whdb}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def sql(self, text):
        return self.src.psql(text, db=self.db)

    def wh(self, text):
        return self.whc.psql(text, db=self.whdb)

    def kafka_section(self, extra=""):
        return f"""kafka:
  brokers: "{self.kafka.bootstrap}"
  topic_prefix: {PREFIX}
{extra}"""

    def zetl(self, extra="", slot_groups=1, workdir=None, archive=True, kafka_extra=""):
        workdir = workdir or self.work
        os.makedirs(workdir, exist_ok=True)
        text = config(self.src, self.db, slot_groups=slot_groups,
                      extra=self.kafka_section(kafka_extra) + extra)
        if not archive:
            text = text.replace("archive:\n  url: file://./archive\n", "")
        return Zetl(workdir, text)

    def loader_config(self, workdir, extra=""):
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "zetl.yaml")
        # A killed loader's partitions move after session.timeout.ms (45 s by default).
        props = "  properties:\n    session.timeout.ms: 6000\n    heartbeat.interval.ms: 1000\n"
        with open(path, "w") as f:
            f.write(config(self.src, self.db, extra=self.kafka_section(props) + f"""warehouse:
  kind: postgres
  dsn: "{self.whc.dsn(self.whdb)}"
  schema: zetl_raw
""" + extra))
        return path

    def start_loader(self, workdir, *args):
        path = self.loader_config(workdir)
        e = dict(os.environ)
        e.setdefault("ZETL_LOG_LEVEL", "info")
        with open(os.path.join(workdir, "load.stderr"), "ab") as err:
            p = subprocess.Popen([ZETL_BIN, "load", "--config", path, *args], cwd=workdir,
                                 env=e, stdout=subprocess.DEVNULL, stderr=err)
        self.loaders = getattr(self, "loaders", []) + [p]
        return p

    def loader_log(self, workdir):
        with open(os.path.join(workdir, "load.stderr"), errors="replace") as f:
            return f.read()[-5000:]


class PublishTest(KafkaBase):
    def test_types_round_trip_avro_and_json(self):
        self.sql("""
CREATE SCHEMA tenant_t;
CREATE TYPE tenant_t.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE tenant_t.types (
  id int PRIMARY KEY, i2 int2, i4 int4, i8 int8, n numeric, f4 float4, f8 float8,
  t text, b bytea, bo bool, d date, ts timestamp, tz timestamptz, iv interval, u uuid,
  j json, jb jsonb, ai int[], at text[], m tenant_t.mood);
""")
        self.sql(r"""
SET timezone = 'Europe/Berlin';
INSERT INTO tenant_t.types VALUES
 (1, -32768, 2147483647, -9223372036854775808, 123456789012345678901234567890.123456789,
  'NaN', 'Infinity', 'comma, "quote" and
newline \ backslash', '\x00ff10', true, '2024-02-29', '2024-01-01 12:34:56.789',
  '2024-06-01 10:00:00+02', '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2, {"b": null}]}', '{"k": "v", "n": 1.50}', '{1,NULL,3}', '{"x,y","NULL",NULL,""}', 'happy'),
 (2, 0, 0, 0, '-Infinity', '-Infinity', '-0', 'NULL', '', false, '-infinity', 'infinity',
  '1970-01-01 00:00:00+00', '-1 days', '00000000-0000-0000-0000-000000000000', 'null', '[]',
  '{}', '{}', 'sad'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL),
 (4, 1, 1, 1, 0.000000000000000000000000000001, 1.5e-45, 2.2250738585072014e-308,
  'unicode: żółć 日本 🎉 ' || chr(9) || 'tab', '\x', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL);
""")
        expect = self.sql("SET timezone = 'UTC'; SELECT "
                          + ", ".join(TYPES_COLS) + " FROM tenant_t.types ORDER BY id")
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        events = committed(self.kafka.bootstrap, PREFIX + ".types")
        self.assertEqual(len(events), 4)
        got = []
        for m, key, val in sorted(events, key=lambda e: e[2]["after"]["id"]):
            self.assertEqual(val["op"], "r")  # copied by the initial snapshot
            self.assertEqual(key, {"tenant_id": "tenant_t", "id": val["after"]["id"]})
            self.assertEqual(val["source"]["connector"], "zetl")
            self.assertEqual(val["source"]["schema"], "tenant_t")
            self.assertEqual(val["source"]["table"], "types")
            self.assertEqual(val["source"]["db"], self.db)
            self.assertEqual(val["source"]["snapshot"], "true")
            self.assertEqual(val["unchanged"], [])
            got.append(val["after"])
        # Every value as the source prints it (floats compared as numbers).
        for row, e in zip(got, expect):
            for c, want in zip(TYPES_COLS, e):
                v = row[c]
                if c in ("f4", "f8") and want is not None:
                    fmt = "<f" if c == "f4" else "<d"
                    # Same bits (NaN included): float4 through its 4 bytes.
                    self.assertEqual(struct.pack(fmt, float(want)), struct.pack(fmt, v), c)
                    continue
                self.assertEqual(pg_text(v), want, (row["id"], c))
        # A live insert is op c with the commit LSN in source.lsn.
        self.sql("INSERT INTO tenant_t.types (id, t, b) VALUES (5, 'live', '\\x01')")
        self.assertEqual(z.run_once(), 0, z.log())
        events = committed(self.kafka.bootstrap, PREFIX + ".types")
        live = [v for _, _, v in events if v["after"] and v["after"]["id"] == 5]
        self.assertEqual(len(live), 1)
        self.assertEqual(live[0]["op"], "c")
        self.assertEqual(live[0]["after"]["b"], b"\x01")
        self.assertGreater(live[0]["source"]["lsn"], 0)

        # JSON: the same envelope, readable with json.loads.
        kafka2 = KafkaMock(brokers=1)
        text = read(z.config).replace(self.kafka.bootstrap, kafka2.bootstrap).replace(
            "topic_prefix: zetl\n", "topic_prefix: zetl\n  format: json\n").replace(
            "slot: zetl", "slot: zj")
        os.makedirs(os.path.join(self.work, "json"))
        zj = Zetl(os.path.join(self.work, "json"), text)
        self.assertEqual(zj.run_once(), 0, zj.log())
        rows = [json.loads(m.value) for m in consume(kafka2.bootstrap, PREFIX + ".types")]
        self.assertEqual(len(rows), 5)
        byid = {r["after"]["id"]: r for r in rows}
        self.assertEqual(byid[1]["after"]["f4"], "NaN")
        self.assertEqual(byid[1]["after"]["i8"], -9223372036854775808)
        self.assertEqual(byid[5]["after"]["b"], "AQ==")
        self.assertEqual(byid[2]["after"]["t"], "NULL")
        self.assertEqual(byid[3]["after"]["t"], "")
        self.assertIsNone(byid[3]["after"]["i2"])

    def test_ops_order_tombstones_and_registry(self):
        self.registry = SchemaRegistry()
        self.sql("""
CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b;
CREATE TABLE tenant_a.users (id int PRIMARY KEY, email text, bio text);
CREATE TABLE tenant_b.users (id int PRIMARY KEY, email text, bio text);
ALTER TABLE tenant_b.users REPLICA IDENTITY FULL;
""")
        z = self.zetl(kafka_extra=f"  schema_registry: {self.registry.url}\n")
        self.assertEqual(z.run_once(), 0, z.log())
        # Many changes of a few keys in both tenants, a key change, deletes, a truncate.
        stmts = []
        for i in range(60):
            for t in ("tenant_a", "tenant_b"):
                k = i % 5
                # bio: incompressible, so it is TOASTed out of line and unchanged in updates.
                stmts.append(f"INSERT INTO {t}.users VALUES ({k}, 'v{i}', (SELECT string_agg("
                             f"md5(g::text || '{i}'), '') FROM generate_series(1, 400) g)) "
                             f"ON CONFLICT (id) DO UPDATE SET email = excluded.email;")
        self.sql("".join(stmts))
        self.sql("UPDATE tenant_a.users SET id = 100 WHERE id = 1;"
                 "DELETE FROM tenant_b.users WHERE id = 2;"
                 "UPDATE tenant_b.users SET email = 'full' WHERE id = 3;")
        self.assertEqual(z.run_once(), 0, z.log())
        events = committed(self.kafka.bootstrap, PREFIX + ".users", registry=self.registry)
        # Tombstones name no stream: read them apart (nothing here is left uncommitted).
        tombs = [(m, kafkatest.decode_confluent(m.key, self.registry)[1], None)
                 for m in consume(self.kafka.bootstrap, PREFIX + ".users") if m.value is None]
        events = sorted(events + tombs, key=lambda e: (e[0].partition, e[0].offset))
        # Subjects by TopicNameStrategy.
        self.assertIn(PREFIX + ".users-key", self.registry.subjects)
        self.assertIn(PREFIX + ".users-value", self.registry.subjects)
        # Per key, changes arrive in source order: (lsn, seq) never goes back.
        last = {}
        for m, key, val in events:
            if val is None:
                continue
            if key is None:
                continue
            k = (key["tenant_id"], key["id"])
            pos = (val["source"]["lsn"], val["source"]["seq"])
            self.assertGreaterEqual(pos, last.get(k, (0, -1)), k)
            last[k] = pos
            # Every change of a key is in one partition.
        parts = {}
        for m, key, val in events:
            if key is not None:
                parts.setdefault((key["tenant_id"], key["id"]), set()).add(m.partition)
        self.assertTrue(all(len(p) == 1 for p in parts.values()), parts)
        # Unchanged TOAST (bio) is flagged, not a placeholder.
        upd = [v for _, _, v in events if v and v["op"] == "u" and
               v["source"]["schema"] == "tenant_a"]
        self.assertTrue(upd)
        self.assertEqual(upd[-1]["unchanged"], ["bio"])
        self.assertIsNone(upd[-1]["after"]["bio"])
        # Key change: a delete of the old key, its tombstone, a create of the new one.
        a1 = [(m, k, v) for m, k, v in events if k == {"tenant_id": "tenant_a", "id": 1}]
        self.assertEqual(a1[-2][2]["op"], "d")
        self.assertIsNone(a1[-1][2])  # tombstone
        new = [v for _, k, v in events if k == {"tenant_id": "tenant_a", "id": 100}]
        self.assertEqual([v["op"] for v in new], ["c"])
        # REPLICA IDENTITY FULL: the update carries the old row as before.
        b3 = [v for _, k, v in events if k == {"tenant_id": "tenant_b", "id": 3} and v]
        self.assertEqual(b3[-1]["op"], "u")
        self.assertIsNotNone(b3[-1]["before"])
        self.assertEqual(b3[-1]["after"]["email"], "full")
        # Delete then tombstone.
        b2 = [(k, v) for _, k, v in events if k == {"tenant_id": "tenant_b", "id": 2}]
        self.assertEqual(b2[-2][1]["op"], "d")
        self.assertIsNone(b2[-1][1])

        # A truncate reaches every partition of the topic.
        self.sql("TRUNCATE tenant_a.users")
        self.assertEqual(z.run_once(), 0, z.log())
        events = committed(self.kafka.bootstrap, PREFIX + ".users", registry=self.registry)
        # Tombstones name no stream: read them apart (nothing here is left uncommitted).
        tombs = [(m, kafkatest.decode_confluent(m.key, self.registry)[1], None)
                 for m in consume(self.kafka.bootstrap, PREFIX + ".users") if m.value is None]
        events = sorted(events + tombs, key=lambda e: (e[0].partition, e[0].offset))
        truncs = [m.partition for m, k, v in events if v and v["op"] == "t"]
        nparts = kafkatest.topic_partitions(self.kafka.bootstrap, PREFIX + ".users")
        self.assertEqual(sorted(truncs), list(range(nparts)))

        # A new column: a new, backward compatible version of the value subject.
        before = len(self.registry.subjects[PREFIX + ".users-value"])
        self.sql("ALTER TABLE tenant_b.users ADD COLUMN age int;"
                 "INSERT INTO tenant_b.users VALUES (50, 'n', 'b', 7)")
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertEqual(len(self.registry.subjects[PREFIX + ".users-value"]), before + 1)
        events = committed(self.kafka.bootstrap, PREFIX + ".users", registry=self.registry)
        # Tombstones name no stream: read them apart (nothing here is left uncommitted).
        tombs = [(m, kafkatest.decode_confluent(m.key, self.registry)[1], None)
                 for m in consume(self.kafka.bootstrap, PREFIX + ".users") if m.value is None]
        events = sorted(events + tombs, key=lambda e: (e[0].partition, e[0].offset))
        self.assertEqual([v["after"]["age"] for _, k, v in events
                          if k == {"tenant_id": "tenant_b", "id": 50}], [7])

    def test_topic_per_tenant_json_and_hostile_names(self):
        bad = 'tenant_b"; drop table x; --'
        qbad = '"tenant_b""; drop table x; --"'
        self.sql(f'''
CREATE SCHEMA tenant_a; CREATE SCHEMA {qbad};
CREATE TABLE tenant_a."we ird.Tab" (id int PRIMARY KEY, "col ""q""" text, "1st" int);
CREATE TABLE {qbad}."we ird.Tab" (id int PRIMARY KEY, "col ""q""" text, "1st" int);
INSERT INTO tenant_a."we ird.Tab" VALUES (1, 'a', 1);
INSERT INTO {qbad}."we ird.Tab" VALUES (1, 'b', 2);
''')
        z = self.zetl(kafka_extra="  topics: tenant_table\n  format: json\n  tombstones: false\n")
        self.assertEqual(z.run_once(), 0, z.log())
        self.sql(f'''DELETE FROM tenant_a."we ird.Tab";
UPDATE {qbad}."we ird.Tab" SET "col ""q""" = 'b2';''')
        self.assertEqual(z.run_once(), 0, z.log())
        topics = sorted(t for t in kafkatest.list_topics(self.kafka.bootstrap)
                        if t.startswith(PREFIX + ".") and "_zetl_" not in t)
        # Names Kafka refuses are adjusted and made unique with a hash of the real name.
        self.assertEqual(len(topics), 2, topics)
        for t in topics:
            self.assertRegex(t, r"^zetl\.tenant_[A-Za-z0-9_-]+\.we_ird\.Tab_[0-9a-f]{8}$")
        events = {}
        for t in topics:
            for m in consume(self.kafka.bootstrap, t):
                self.assertIsNotNone(m.value)  # tombstones: false
                ev = json.loads(m.value)
                events.setdefault(ev["source"]["schema"], []).append((json.loads(m.key), ev))
        a = events["tenant_a"]
        self.assertEqual([e["op"] for _, e in a], ["r", "d"])
        self.assertEqual(a[1][1]["before"]["id"], 1)
        b = events[bad]
        self.assertEqual(b[0][0], {"tenant_id": bad, "id": 1})
        self.assertEqual(b[-1][1]["op"], "u")
        # JSON members keep the source's column names.
        self.assertEqual(b[-1][1]["after"], {"tenant_id": bad, "id": 1, 'col "q"': "b2",
                                             "1st": 2})
        self.assertEqual(b[-1][1]["source"]["table"], "we ird.Tab")

    def test_errors_name_the_input(self):
        self.sql("CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.docs (id int PRIMARY KEY, t text)")
        # Brokers that do not answer: one clear line, no slot created.
        z = self.zetl()
        text = read(z.config).replace(self.kafka.bootstrap, "127.0.0.1:1")
        write(z.config, text)
        self.assertEqual(z.run_once(timeout=60), 1, z.log())
        self.assertIn('kafka brokers "127.0.0.1:1" did not answer', z.log())
        self.assertEqual(len([ln for ln in z.log().splitlines() if "FATAL" in ln]), 1, z.log())
        rc, out, _ = run_zetl(["check", "--config", z.config], cwd=self.work, timeout=60)
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r'error +kafka brokers "127.0.0.1:1" did not answer')
        self.assertEqual(self.sql("SELECT count(*) FROM pg_replication_slots "
                                  f"WHERE database = '{self.db}'"), [["0"]])
        # A change larger than message.max.bytes names the table and the key, and the slot stays.
        z = self.zetl(workdir=os.path.join(self.work, "big"),
                      kafka_extra="  properties:\n    message.max.bytes: 20000\n")
        self.assertEqual(z.run_once(), 0, z.log())
        self.sql("INSERT INTO tenant_a.docs VALUES (7, repeat('y', 50000))")
        self.assertEqual(z.run_once(), 1, z.log())
        self.assertIn('table "docs", tenant "tenant_a", key (id)=(7)', z.log())
        self.assertIn("message.max.bytes", z.log())
        # A registry that refuses a schema: subject and reason named.
        self.registry = SchemaRegistry()
        self.registry.refuse(PREFIX + ".docs-value", 42201, "Invalid schema: nope")
        z = self.zetl(workdir=os.path.join(self.work, "reg"),
                      kafka_extra=f"  schema_registry: {self.registry.url}\n")
        text = read(z.config).replace("slot: zetl", "slot: zreg")
        write(z.config, text)
        self.assertEqual(z.run_once(), 1, z.log())
        self.assertIn('subject "zetl.docs-value"', z.log())
        self.assertIn("Invalid schema: nope", z.log())


class ExactlyOnceTest(KafkaBase):
    def _workload(self, stop, tenants, counter):
        i = 0
        while not stop.is_set():
            t = tenants[i % len(tenants)]
            k = i % 50
            try:
                self.sql(f"BEGIN; INSERT INTO {t}.items VALUES ({k}, {i}) ON CONFLICT (id) DO "
                         f"UPDATE SET v = excluded.v; INSERT INTO {t}.log VALUES ({i}); COMMIT;")
                counter[0] = i + 1
            except RuntimeError:
                pass
            i += 1

    def test_kill_and_broker_faults_each_change_once(self):
        tenants = ["tenant_a", "tenant_b", "tenant_c", "tenant_d"]
        self.sql("".join(f"CREATE SCHEMA {t}; CREATE TABLE {t}.items (id int PRIMARY KEY, v int);"
                         f"CREATE TABLE {t}.log (n int PRIMARY KEY);" for t in tenants))
        self.kafka.stop()
        self.kafka = KafkaMock(brokers=3)
        z = self.zetl(slot_groups=2, archive=False)
        stop = threading.Event()
        counter = [0]
        w = threading.Thread(target=self._workload, args=(stop, tenants, counter))
        w.start()
        rnd = random.Random(int(os.environ.get("ZETL_TEST_SEED", time.time())))
        try:
            for round_ in range(8):
                z.start()
                time.sleep(rnd.uniform(0.5, 2.0))
                fault = round_ % 4
                if fault == 1:
                    self.kafka.command("broker-down 2")
                    time.sleep(rnd.uniform(0.5, 1.5))
                    self.kafka.command("broker-up 2")
                elif fault == 2:
                    # Transient errors of the transaction's requests: retried by the client.
                    self.kafka.command("push-errors Produce NOT_LEADER_FOR_PARTITION "
                                       "REQUEST_TIMED_OUT")
                    self.kafka.command("push-errors EndTxn COORDINATOR_LOAD_IN_PROGRESS")
                elif fault == 3:
                    # Leader changes: every partition of the change topics moves broker.
                    for topic in (PREFIX + ".items", PREFIX + ".log"):
                        for p in range(kafkatest.topic_partitions(self.kafka.bootstrap, topic)):
                            self.kafka.command(f"leader {topic} {p} {1 + (p + round_) % 3}")
                time.sleep(rnd.uniform(0.2, 1.0))
                z.kill(signal.SIGKILL)
        finally:
            stop.set()
            w.join()
        self.assertEqual(z.run_once(timeout=300), 0, z.log())
        # Every committed change of log (insert only) exactly once; none missing.  Rows
        # inserted before the slot existed come as snapshot reads (op r); a row inserted
        # while the initial snapshot ran may come as both (the snapshot reads what is
        # there), but never twice as the same op.
        seen = {}
        schemas = schema_table(self.kafka.bootstrap)
        for m, key, val in committed(self.kafka.bootstrap, PREFIX + ".log", schemas=schemas):
            k = (key["tenant_id"], key["n"], val["op"])
            seen[k] = seen.get(k, 0) + 1
        want = {(t, int(n)) for t in tenants for (n,) in self.sql(f"SELECT n FROM {t}.log")}
        self.assertEqual({k[:2] for k in seen}, want)
        self.assertEqual({k[2] for k in seen} - {"c", "r"}, set())
        dups = {k: c for k, c in seen.items() if c != 1}
        self.assertEqual(dups, {})
        # The last change of each item key equals the source.
        last = {}
        for m, key, val in committed(self.kafka.bootstrap, PREFIX + ".items", schemas=schemas):
            last[(key["tenant_id"], key["id"])] = val["after"]["v"] if val["after"] else None
        src = {(t, int(i)): int(v) for t in tenants
               for i, v in self.sql(f"SELECT id, v FROM {t}.items")}
        self.assertEqual(last, src)


class LoadTest(KafkaBase):
    def assert_same(self, tenants, tables, schema="zetl_raw"):
        for table, cols in tables.items():
            for t in tenants:
                src = self.sql(f"SELECT {cols} FROM {t}.{table} ORDER BY 1")
                got = self.wh(f"SELECT {cols} FROM {schema}.{table} "
                              f"WHERE tenant_id = '{t}' ORDER BY 1")
                self.assertEqual(got, src, (t, table))

    def wait_same(self, tenants, tables, timeout=240, schema="zetl_raw", logs=()):
        deadline = time.time() + timeout
        while True:
            try:
                self.assert_same(tenants, tables, schema)
                return
            except (AssertionError, RuntimeError):
                if time.time() > deadline:
                    for d in logs:
                        print(self.loader_log(d))
                    raise
            time.sleep(0.5)

    def test_stale_batch_is_fenced(self):
        """A batch whose partition moved on in the warehouse (another loader applied
        it meanwhile) is dropped, and the loader goes on from the stored offset."""
        self.sql("CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.t (id int PRIMARY KEY, v text);"
                 "INSERT INTO tenant_a.t SELECT g, 'first' FROM generate_series(1, 10) g")
        z = self.zetl(archive=False)
        self.assertEqual(z.run_once(), 0, z.log())
        d = os.path.join(self.work, "l1")
        self.start_loader(d)
        self.wait_same(["tenant_a"], {"t": "id, v"}, logs=(d,))
        # Another session holds the partitions' offset rows, as a loader applying them would.
        holder = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
             str(self.whc.port), "-U", "postgres", "-d", self.whdb],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        holder.stdin.write("BEGIN; SELECT stream FROM zetl_raw._zetl_offsets "
                           "WHERE stream LIKE 'kafka:%' FOR UPDATE;\n")
        holder.stdin.flush()
        self.sql("UPDATE tenant_a.t SET v = 'second'")
        self.assertEqual(z.run_once(), 0, z.log())
        # The loader's apply waits for the rows; the holder moves them on and commits.
        deadline = time.time() + 60
        while not self.wh("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                          "AND query LIKE '%_zetl_offsets%'"):
            self.assertLess(time.time(), deadline, self.loader_log(d))
            time.sleep(0.2)
        holder.stdin.write("UPDATE zetl_raw._zetl_offsets SET last_lsn = last_lsn + 1000 "
                           "WHERE stream LIKE 'kafka:%' AND last_lsn > 0; COMMIT;\n")
        holder.stdin.close()
        holder.wait(30)
        deadline = time.time() + 60
        while "another loader applied it" not in self.loader_log(d):
            self.assertLess(time.time(), deadline, self.loader_log(d))
            time.sleep(0.2)
        time.sleep(2)
        # The stale batch's rows were never applied: the warehouse kept the first values.
        self.assertEqual(self.wh("SELECT DISTINCT v FROM zetl_raw.t"), [["first"]])

    def test_two_loaders_kill_and_rebuild(self):
        tenants = ["tenant_a", "tenant_b", "tenant_c"]
        tables = {"users": "id, email, score", "orders": "id, user_id, note"}
        self.sql("".join(
            f"CREATE SCHEMA {t};"
            f"CREATE TABLE {t}.users (id int PRIMARY KEY, email text, score numeric(10,2));"
            f"CREATE TABLE {t}.orders (id bigint PRIMARY KEY, user_id int, note text);"
            f"INSERT INTO {t}.users SELECT g, 'u' || g, g / 3.0 FROM generate_series(1, 200) g;"
            for t in tenants))
        z = self.zetl(slot_groups=2, archive=False)
        z.start()
        d1, d2 = os.path.join(self.work, "l1"), os.path.join(self.work, "l2")
        l1 = self.start_loader(d1)
        self.start_loader(d2)
        for i in range(300):
            t = tenants[i % 3]
            self.sql(f"INSERT INTO {t}.orders VALUES ({i}, {i % 200 + 1}, 'n{i}');"
                     f"UPDATE {t}.users SET score = score + 1 WHERE id = {i % 200 + 1};"
                     + (f"DELETE FROM {t}.users WHERE id = {i % 200 + 1};" if i % 7 == 0 else ""))
            if i == 150:
                l1.kill()  # kill -9 of a loader mid-stream: l2 takes its partitions
                l1.wait()
        self.sql("UPDATE tenant_b.users SET id = id + 1000 WHERE id < 5; TRUNCATE tenant_c.orders;"
                 "INSERT INTO tenant_c.orders VALUES (1, 1, 'after truncate')")
        self.wait_same(tenants, tables, logs=(d1, d2))
        self.start_loader(d1)  # back in the group
        self.sql("INSERT INTO tenant_a.orders VALUES (9999, 1, 'late')")
        self.wait_same(tenants, tables, logs=(d1, d2))
        # zetl verify agrees.
        rc, out, err = run_zetl(["verify", "--config", os.path.join(d1, "zetl.yaml")])
        self.assertEqual(rc, 0, out + err)
        # Rebuild into another schema from the beginning of the topics.
        d3 = os.path.join(self.work, "l3")
        self.start_loader(d3, "--into", "rebuilt", "--from", "earliest")
        self.wait_same(tenants, tables, schema="rebuilt", logs=(d3,))
        for p in self.loaders:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                self.assertEqual(p.wait(60), 0)
        z.kill(signal.SIGTERM)


if __name__ == "__main__":
    main()
