"""Capture: pgoutput streams of tenant schemas into the archive, checked row by row
with independent readers (zstd CLI, our CSV parser, psql)."""

import os
import shutil
import signal
import tempfile
import time
import unittest

from zetltest import (SANITIZE, Cluster, Zetl, config, main, read_archive, run_zetl)


def tenant_ddl(schema):
    q = '"' + schema.replace('"', '""') + '"'
    return f"""
CREATE SCHEMA {q};
CREATE TABLE {q}.users (id int PRIMARY KEY, email text, name text, score numeric(10,2));
CREATE TABLE {q}.orders (id bigint PRIMARY KEY, user_id int, total numeric(12,2), note text);
"""


class CaptureTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = Cluster()

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-test-")
        self.db = self.pg.createdb(self.id().split(".")[-1].lower())

    def tearDown(self):
        # Slots pin WAL: drop this test's slots, then the database.
        Zetl.kill_all()
        self.pg.drop_slots(self.db)
        self.pg.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def sql(self, text):
        return self.pg.psql(text, db=self.db)

    def zetl(self, **kw):
        return Zetl(self.work, config(self.pg, self.db, **kw))

    def archive(self):
        return read_archive(os.path.join(self.work, "archive"))

    def test_multi_tenant_changes_row_by_row(self):
        self.sql(tenant_ddl("tenant_a") + tenant_ddl("tenant_b") + tenant_ddl("other"))
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())  # creates slot + publication
        self.sql("""
INSERT INTO tenant_a.users VALUES (1, 'a1@x', 'Ann', 1.50), (2, 'a2@x', 'Bob', NULL);
INSERT INTO tenant_b.users VALUES (1, 'b1@x', 'Cid', 3);
INSERT INTO other.users VALUES (9, 'o@x', 'not a tenant', 0);
BEGIN;
UPDATE tenant_a.users SET name = 'Anna' WHERE id = 1;
DELETE FROM tenant_b.users WHERE id = 1;
INSERT INTO tenant_b.orders VALUES (10, 1, 99.99, 'first');
COMMIT;
UPDATE tenant_a.users SET id = 3 WHERE id = 2;
TRUNCATE tenant_b.orders;
""")
        self.assertEqual(z.run_once(), 0, z.log())
        batches, rows = self.archive()
        got = [(r["_table"], r["tenant_id"], r["_zetl_op"], r.get("id"), r.get("name"))
               for r in rows]
        self.assertEqual(got, [
            ("users", "tenant_a", "I", "1", "Ann"),
            ("users", "tenant_a", "I", "2", "Bob"),
            ("users", "tenant_b", "I", "1", "Cid"),
            ("users", "tenant_a", "U", "1", "Anna"),
            ("users", "tenant_b", "D", "1", None),
            ("orders", "tenant_b", "I", "10", None),
            ("users", "tenant_a", "B", "2", None),
            ("users", "tenant_a", "U", "3", "Bob"),
            ("orders", "tenant_b", "T", None, None),
        ])
        # Order within a transaction, one commit LSN per transaction.
        txn = [r for r in rows if r["_zetl_op"] in "UDI" and r["_zetl_lsn"] == rows[3]["_zetl_lsn"]]
        self.assertEqual([r["_zetl_seq"] for r in txn], ["0", "1", "2"])
        self.assertEqual(rows[0]["score"], "1.50")
        self.assertIsNone(rows[1]["score"])
        self.assertTrue(rows[0]["_zetl_commit_ts"].endswith("+00"))
        # The manifest names LSN range, columns and types.
        man = batches[0]
        self.assertIn("first_lsn", man)
        cols = {f["table"]: [(c["name"], c["type"]) for c in f["columns"]] for f in man["files"]}
        self.assertEqual(cols["users"], [("id", "int4"), ("email", "text"), ("name", "text"),
                                         ("score", "numeric(10,2)")])
        # A second --once with nothing new archives nothing new.
        n = len(batches)
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertEqual(len(self.archive()[0]), n)

    def test_types_survive_exactly(self):
        self.sql("""
CREATE SCHEMA tenant_t;
CREATE TYPE tenant_t.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE tenant_t.types (
  id int PRIMARY KEY, i2 int2, i4 int4, i8 int8, n numeric, f4 float4, f8 float8,
  t text, b bytea, bo bool, d date, ts timestamp, tz timestamptz, iv interval, u uuid,
  j json, jb jsonb, ai int[], at text[], m tenant_t.mood);
""")
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
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
        self.assertEqual(z.run_once(), 0, z.log())
        _, rows = self.archive()
        cols = ["id", "i2", "i4", "i8", "n", "f4", "f8", "t", "b", "bo", "d", "ts", "tz", "iv",
                "u", "j", "jb", "ai", "at", "m"]
        expect = self.sql("SET timezone = 'UTC'; SELECT " + ", ".join(cols)
                          + " FROM tenant_t.types ORDER BY id")
        got = [[r[c] for c in cols] for r in rows]
        self.assertEqual(got, expect)
        # NULL, empty string and the string NULL stay distinct.
        self.assertEqual([r["t"] for r in rows[:3]][1:], ["NULL", ""])
        self.assertIsNone(rows[2]["i2"])

    def test_unchanged_toast_is_flagged_not_overwritten(self):
        self.sql("""
CREATE SCHEMA tenant_x;
CREATE TABLE tenant_x.docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE tenant_x.docs ALTER COLUMN body SET STORAGE EXTERNAL;
""")
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        self.sql("""
INSERT INTO tenant_x.docs SELECT 1, 'first', string_agg(md5(i::text), '') FROM generate_series(1, 32768) i;
UPDATE tenant_x.docs SET title = 'second' WHERE id = 1;
""")
        self.assertEqual(z.run_once(), 0, z.log())
        _, rows = self.archive()
        self.assertEqual([r["_zetl_op"] for r in rows], ["I", "U"])
        self.assertEqual(len(rows[0]["body"]), 1024 * 1024)
        self.assertIsNone(rows[0]["_zetl_unchanged"])
        self.assertEqual(rows[1]["title"], "second")
        self.assertEqual(rows[1]["_zetl_unchanged"], "{2}")  # body is source column 2
        self.assertIsNone(rows[1]["body"])  # no placeholder value

    def test_streamed_transaction_with_subtransaction_rollback(self):
        self.sql("""
CREATE SCHEMA tenant_s;
CREATE TABLE tenant_s.items (id int PRIMARY KEY, v text);
""")
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        # Larger than logical_decoding_work_mem (64kB): streamed in chunks.
        self.sql("""
BEGIN;
INSERT INTO tenant_s.items SELECT i, repeat('x', 100) FROM generate_series(1, 5000) i;
SAVEPOINT s1;
INSERT INTO tenant_s.items SELECT i, 'rolled back' FROM generate_series(5001, 10000) i;
ROLLBACK TO SAVEPOINT s1;
INSERT INTO tenant_s.items SELECT i, 'kept' FROM generate_series(10001, 12000) i;
COMMIT;
BEGIN;
INSERT INTO tenant_s.items SELECT i, repeat('y', 100) FROM generate_series(20001, 25000) i;
ROLLBACK;
""")
        self.assertEqual(z.run_once(), 0, z.log())
        _, rows = self.archive()
        ids = [int(r["id"]) for r in rows]
        self.assertEqual(ids, list(range(1, 5001)) + list(range(10001, 12001)))
        self.assertEqual(len({r["_zetl_lsn"] for r in rows}), 1)
        self.assertEqual([int(r["_zetl_seq"]) for r in rows], list(range(7000)))
        # No spill file is left behind.
        spool = os.path.join(self.work, "zetl-data", "spool")
        leftovers = [f for _, _, fs in os.walk(spool) for f in fs]
        self.assertEqual(leftovers, [])

    def test_hostile_tenant_name(self):
        name = 'tenant_a"; drop table x; --'
        self.sql("CREATE TABLE public.x (id int);" + tenant_ddl(name))
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        self.sql(f"""INSERT INTO "tenant_a""; drop table x; --".users VALUES (1, 'e', 'n', 1)""")
        self.assertEqual(z.run_once(), 0, z.log())
        _, rows = self.archive()
        self.assertEqual([(r["tenant_id"], r["id"]) for r in rows], [(name, "1")])
        self.assertEqual(self.sql("SELECT count(*) FROM public.x"), [["0"]])

    def test_table_without_primary_key(self):
        self.sql("""
CREATE SCHEMA tenant_n;
CREATE TABLE tenant_n.log (msg text, n int);
CREATE TABLE tenant_n.full_log (msg text, n int);
ALTER TABLE tenant_n.full_log REPLICA IDENTITY FULL;
""")
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertIn('"tenant_n"."log" has no primary key', z.log())
        self.sql("""
INSERT INTO tenant_n.log VALUES ('a', 1);
INSERT INTO tenant_n.full_log VALUES ('b', 2);
UPDATE tenant_n.full_log SET n = 3;
DELETE FROM tenant_n.full_log;
""")
        self.assertEqual(z.run_once(), 0, z.log())
        _, rows = self.archive()
        got = [(r["_table"], r["_zetl_op"], r["msg"], r["n"]) for r in rows]
        self.assertEqual(got, [("log", "I", "a", "1"), ("full_log", "I", "b", "2"),
                               ("full_log", "B", "b", "2"), ("full_log", "U", "b", "3"),
                               ("full_log", "D", "b", "3")])

    def test_sigterm_finishes_open_batch(self):
        self.sql(tenant_ddl("tenant_a"))
        z = self.zetl(buffer_extra="  max_age_ms: 600000\n".replace("  max_age_ms", "  #"))
        z.start()
        deadline = time.time() + 30
        while time.time() < deadline and not self.sql(
                f"SELECT 1 FROM pg_replication_slots WHERE database = '{self.db}' AND active"):
            time.sleep(0.1)
        self.sql("INSERT INTO tenant_a.users SELECT i, 'e', 'n', 1 FROM generate_series(1, 10) i")
        time.sleep(1.0)
        self.assertEqual(z.kill(signal.SIGTERM), 0, z.log())
        _, rows = self.archive()
        self.assertEqual(len(rows), 10)
        # The slot was confirmed past what is archived: a restart archives nothing again.
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertEqual(len(self.archive()[1]), 10)

    def test_kill_9_and_restart_loses_nothing_duplicates_nothing(self):
        self.sql(tenant_ddl("tenant_a") + tenant_ddl("tenant_b"))
        z = self.zetl(buffer_extra="")
        self.assertEqual(z.run_once(), 0, z.log())
        total = 0
        for round_ in range(4):
            z.start()
            # Writes while zetl runs; kill it at a different moment each round.
            for k in range(5):
                base = round_ * 100000 + k * 1000
                self.sql(f"""
INSERT INTO tenant_a.users SELECT i, 'e', 'n', 1 FROM generate_series({base}, {base + 199}) i;
INSERT INTO tenant_b.orders SELECT i, 1, 2, 'x' FROM generate_series({base}, {base + 99}) i;
""")
                total += 300
                time.sleep(0.05 * round_)
            time.sleep(0.1 + 0.15 * round_)
            z.kill(signal.SIGKILL)
        self.assertEqual(z.run_once(), 0, z.log())
        _, rows = self.archive()
        keys = [(r["_table"], r["tenant_id"], r["id"]) for r in rows]
        self.assertEqual(len(keys), total)
        self.assertEqual(len(set(keys)), total, "a change was archived twice")

    @unittest.skipIf(SANITIZE, "RSS is not meaningful under AddressSanitizer")
    def test_two_million_row_transaction_streams_in_bounded_memory(self):
        self.sql("""
CREATE SCHEMA tenant_big;
CREATE TABLE tenant_big.events (id bigint PRIMARY KEY, payload text);
""")
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        self.sql("INSERT INTO tenant_big.events SELECT i, md5(i::text) FROM "
                 "generate_series(1, 2000000) i")
        self.assertEqual(z.run_once(timeout=900), 0, z.log())
        batches, _ = [], None
        root = os.path.join(self.work, "archive")
        import json
        total = 0
        for s in os.listdir(root):
            for b in os.listdir(os.path.join(root, s)):
                with open(os.path.join(root, s, b, "manifest.json")) as f:
                    total += json.load(f)["rows"]
        self.assertEqual(total, 2000000)
        self.assertLess(z.maxrss_kb, 100 * 1024, f"peak RSS {z.maxrss_kb} KiB")


    def test_reconnects_when_the_walsender_dies(self):
        self.sql(tenant_ddl("tenant_a"))
        z = self.zetl()
        self.assertEqual(z.run_once(), 0, z.log())
        z.start()
        for k in range(3):
            self.wait_active()
            self.sql(f"INSERT INTO tenant_a.users SELECT i, 'e', 'n', 1 FROM "
                     f"generate_series({k * 100}, {k * 100 + 99}) i")
            time.sleep(0.3)
            self.sql(f"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                     f"WHERE database = '{self.db}' AND active")
        self.wait_active(timeout=60)
        self.assertEqual(z.kill(signal.SIGTERM), 0, z.log())
        self.assertIn("reconnecting", z.log())
        self.assertEqual(z.run_once(), 0, z.log())
        ids = sorted(int(r["id"]) for r in self.archive()[1])
        self.assertEqual(ids, list(range(300)))

    def wait_active(self, timeout=30):
        deadline = time.time() + timeout
        while not self.sql(f"SELECT 1 FROM pg_replication_slots WHERE database = '{self.db}' "
                           f"AND active"):
            self.assertLess(time.time(), deadline, "zetl did not (re)connect")
            time.sleep(0.1)

    def test_slot_groups_spread_tenants(self):
        tenants = [f"tenant_{i}" for i in range(6)]
        self.sql("".join(tenant_ddl(t) for t in tenants))
        z = self.zetl(slot_groups=3)
        self.assertEqual(z.run_once(), 0, z.log())
        slots = self.sql(f"SELECT slot_name FROM pg_replication_slots WHERE database = "
                         f"'{self.db}' ORDER BY 1")
        pubs = self.sql("SELECT pubname FROM pg_publication ORDER BY 1")
        self.assertEqual(slots, [["zetl_0"], ["zetl_1"], ["zetl_2"]])
        self.assertEqual(pubs, slots)
        self.sql("".join(f"INSERT INTO {t}.users VALUES (1, 'e', '{t}', 1);" for t in tenants))
        self.assertEqual(z.run_once(), 0, z.log())
        _, rows = self.archive()
        self.assertEqual(sorted(r["tenant_id"] for r in rows), tenants)
        by_stream = {}
        for r in rows:
            by_stream.setdefault(r["tenant_id"], set()).add(r["_stream"])
        self.assertTrue(all(len(v) == 1 for v in by_stream.values()))
        self.assertGreater(len({r["_stream"] for r in rows}), 1)

    def test_table_selection_and_cleaning_rules(self):
        self.sql(tenant_ddl("tenant_a"))
        extra = """transforms:
  tenant_column: org
  clean:
    - columns: ["users.name"]
      trim: true
      null_strings: ["NULL", "n/a"]
      lower: true
    - columns: ["email"]
      mask: sha256
    - columns: ["score"]
      drop: true
"""
        cfg = config(self.pg, self.db, extra=extra).replace(
            "  slot: zetl", '  tables: ["users"]\n  slot: zetl')
        z = Zetl(self.work, cfg)
        env = {"ZETL_MASK_SALT": "pepper"}
        self.assertEqual(z.run_once(env=env), 0, z.log())
        self.sql("""
INSERT INTO tenant_a.users VALUES (1, 'A@x', '  MiXed  ', 5), (2, NULL, ' n/a ', 6),
  (3, '', 'NULL', 7);
INSERT INTO tenant_a.orders VALUES (1, 1, 1, 'not captured');
""")
        self.assertEqual(z.run_once(env=env), 0, z.log())
        batches, rows = self.archive()
        import hashlib
        self.assertEqual([r["_table"] for r in rows], ["users"] * 3)
        self.assertEqual([r["org"] for r in rows], ["tenant_a"] * 3)
        self.assertEqual([r["name"] for r in rows], ["mixed", None, None])
        self.assertEqual([r["email"] for r in rows],
                         [hashlib.sha256(b"pepperA@x").hexdigest(), None,
                          hashlib.sha256(b"pepper").hexdigest()])
        self.assertNotIn("score", rows[0])
        cols = [c["name"] for c in batches[-1]["files"][0]["columns"]]
        self.assertEqual(cols, ["id", "email", "name"])


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = Cluster()
        cls.pg.psql("CREATE ROLE norepl LOGIN PASSWORD 'pw'; CREATE SCHEMA tenant_a;"
                    "CREATE TABLE tenant_a.t (id int primary key)")

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-test-")

    def tearDown(self):
        shutil.rmtree(self.work, ignore_errors=True)

    def run_with(self, cfg_text, env=None):
        path = os.path.join(self.work, "zetl.yaml")
        with open(path, "w") as f:
            f.write(cfg_text)
        return run_zetl(["run", "--once", "--config", path], cwd=self.work, env=env)

    def assert_no_slot(self):
        self.assertEqual(self.pg.psql("SELECT count(*) FROM pg_replication_slots"), [["0"]])

    def test_unreachable_source(self):
        from zetltest import free_port
        rc, _, err = self.run_with(config(self.pg, "postgres",
                                          dsn=f"host=127.0.0.1 port={free_port()} user=zetl"))
        self.assertEqual(rc, 1)
        self.assertIn("could not connect to the source database", err)
        self.assertIn("Connection refused", err)

    def test_wrong_password_is_not_logged(self):
        rc, _, err = self.run_with(config(self.pg, "postgres",
                                          dsn=self.pg.dsn(password="wrong-secret")))
        self.assertEqual(rc, 1)
        self.assertIn("password authentication failed", err)
        self.assertNotIn("wrong-secret", err)
        self.assert_no_slot()

    def test_dsn_from_environment(self):
        rc, _, err = self.run_with(config(self.pg, "postgres", dsn="host=nowhere.invalid"),
                                   env={"ZETL_SOURCE_DSN": self.pg.dsn(password="bad-env-pw")})
        self.assertEqual(rc, 1)
        self.assertIn("password authentication failed", err)
        self.assertNotIn("bad-env-pw", err)

    def test_missing_replication_privilege(self):
        rc, _, err = self.run_with(config(self.pg, "postgres",
                                          dsn=self.pg.dsn(user="norepl", password="pw")))
        self.assertEqual(rc, 1)
        self.assertIn("lacks the REPLICATION privilege", err)
        self.assert_no_slot()

    def test_no_tenant_schema_matches(self):
        rc, _, err = self.run_with(config(self.pg, "postgres", schemas=("nomatch_*",)))
        self.assertEqual(rc, 1)
        self.assertIn("no schema in the source database matches", err)
        self.assertIn("nomatch_*", err)
        self.assert_no_slot()

    def test_wal_level_not_logical(self):
        other = Cluster(wal_level="replica")
        try:
            rc, _, err = self.run_with(config(other, "postgres"))
        finally:
            other.destroy()
        self.assertEqual(rc, 1)
        self.assertIn('wal_level is "replica"', err)

    def test_invalid_config_exits_2_naming_file_line_key(self):
        rc, _, err = self.run_with("source:\n  dsn: x\n  tenants:\n    schemas: [a]\n"
                                   "buffer:\n  max_bytes: 12 apples\narchive:\n  url: file://a\n")
        self.assertEqual(rc, 2)
        self.assertIn("zetl.yaml:6", err)
        self.assertIn("buffer.max_bytes", err)

    def test_unwritable_buffer_dir(self):
        blocker = os.path.join(self.work, "file")
        open(blocker, "w").close()
        cfg = config(self.pg, "postgres").replace("dir: ./zetl-data", f"dir: {blocker}/sub")
        rc, _, err = self.run_with(cfg)
        self.assertEqual(rc, 1)
        self.assertIn(blocker, err)

    def test_usage(self):
        rc, out, _ = run_zetl(["--help"])
        self.assertEqual(rc, 0)
        self.assertIn("zetl run", out)
        rc, _, err = run_zetl(["run"])
        self.assertEqual(rc, 2)
        rc, _, err = run_zetl(["frobnicate", "--config", "x"])
        self.assertEqual(rc, 2)
        self.assertIn("unknown command", err)


if __name__ == "__main__":
    main()
