"""Warehouse sink (kind: postgres): real captures (`zetl run --once`, archive only)
applied batch by batch with `zetl apply-batch`, then the warehouse compared with
the source in SQL, row by row and value by value.

Every test class runs twice: with `slot_groups: 1` and (the `...SlotGroups2`
subclasses at the end) with `slot_groups: 2`, where the tenant schemas spread
over two streams (zetl_0, zetl_1) that apply into the same warehouse tables."""

import json
import os
import shutil
import tempfile
import unittest

from zetltest import Cluster, Zetl, config, main, run_zetl, slot_group

HOSTILE = 'tenant_h"; drop table x; --'


def q(name):
    return '"' + name.replace('"', '""') + '"'


def load_json(path):
    with open(path) as f:
        return json.load(f)


def lit(s):
    return "'" + s.replace("'", "''") + "'"



class WarehouseBase(unittest.TestCase):
    """Source and warehouse are two databases of one cluster."""

    SLOT_GROUPS = 1

    @classmethod
    def setUpClass(cls):
        cls.pg = Cluster()

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-wh-")
        name = self.id().split(".")[-1].lower()
        self.db = self.pg.createdb(name)
        self.whdb = self.pg.createdb(name + "_wh")
        self.z = None

    def tearDown(self):
        self.pg.psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     f"WHERE database = '{self.db}' AND NOT active")
        self.pg.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        self.pg.psql(f'DROP DATABASE "{self.whdb}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def sql(self, text):
        return self.pg.psql(text, db=self.db)

    def wh(self, text):
        return self.pg.psql(text, db=self.whdb)

    def setup_zetl(self, deletes="hard", schema="zetl_raw"):
        extra = (f"warehouse:\n  kind: postgres\n  dsn: \"{self.pg.dsn(self.whdb)}\"\n"
                 f"  schema: {schema}\n  deletes: {deletes}\n")
        self.schema = schema
        # Capture runs archive-only; apply-batch reads the same file plus the warehouse.
        groups = self.SLOT_GROUPS
        self.z = Zetl(self.work, config(self.pg, self.db, slot_groups=groups))
        self.whconfig = os.path.join(self.work, "wh.yaml")
        with open(self.whconfig, "w") as f:
            f.write(config(self.pg, self.db, extra=extra, slot_groups=groups))
        self.capture()  # creates the slot and publication

    def capture(self):
        self.assertEqual(self.z.run_once(), 0, self.z.log())

    def streams(self):
        root = os.path.join(self.work, "archive")
        if not os.path.isdir(root):
            return []
        return sorted(s for s in os.listdir(root) if os.path.isdir(os.path.join(root, s)))

    def batch_dirs(self, stream=None):
        """Batch directories, stream by stream (zetl_0 first), each stream in LSN order."""
        root = os.path.join(self.work, "archive")
        out = []
        for s in ([stream] if stream else self.streams()):
            sdir = os.path.join(root, s)
            if not os.path.isdir(sdir):
                continue
            out += [os.path.join(sdir, b) for b in sorted(os.listdir(sdir))
                    if not b.startswith(".")]
        return out

    def stream_of(self, tenant):
        """The stream (= publication and slot name) that captures a tenant schema."""
        rows = self.sql("SELECT p.pubname FROM pg_publication_namespace pn "
                        "JOIN pg_publication p ON p.oid = pn.pnpubid "
                        "JOIN pg_namespace n ON n.oid = pn.pnnspid "
                        f"WHERE n.nspname = {lit(tenant)}")
        self.assertEqual(len(rows), 1, f"publications of {tenant}: {rows}")
        return rows[0][0]

    def assert_groups(self, tenants):
        """The tenants are captured by the streams the FNV hash puts them in."""
        for t in tenants:
            self.assertEqual(self.stream_of(t), f"zetl_{slot_group(t, self.SLOT_GROUPS)}", t)

    def apply(self, d, expect=0):
        rc, out, err = run_zetl(["apply-batch", "--config", self.whconfig, d], cwd=self.work)
        self.assertEqual(rc, expect, err)
        return err

    def apply_all(self):
        """Applies every batch in order (already applied ones are skipped by the offset)."""
        errs = ""
        for d in self.batch_dirs():
            errs += self.apply(d)
        return errs

    def sync(self):
        self.capture()
        return self.apply_all()

    def assert_same(self, table, cols, tenants, order="id"):
        """Source tenant tables and the warehouse table agree value for value."""
        for t in tenants:
            src = self.sql(f"SET timezone = 'UTC'; SELECT {cols} FROM {q(t)}.{q(table)} "
                           f"ORDER BY {order}")
            got = self.wh(f"SET timezone = 'UTC'; SELECT {cols} FROM {self.schema}.{q(table)} "
                          f"WHERE tenant_id = {lit(t)} ORDER BY {order}")
            self.assertEqual(got, src, f"{t}.{table}")


def users_ddl(schema):
    s = q(schema)
    return f"""
CREATE SCHEMA {s};
CREATE TABLE {s}.users (id int PRIMARY KEY, email text, name varchar(40), score numeric(10,2));
CREATE TABLE {s}.orders (id bigint, line int, total numeric(12,2), note text,
                         PRIMARY KEY (id, line));
"""


class HardModeTest(WarehouseBase):
    def test_multi_tenant_changes_and_idempotence(self):
        self.sql("CREATE TABLE public.x (id int);" + users_ddl("tenant_a") + users_ddl("tenant_b")
                 + users_ddl(HOSTILE))
        self.setup_zetl()
        self.sql(f"""
INSERT INTO tenant_a.users SELECT i, 'a' || i || '@x', 'A' || i, i / 3.0 FROM generate_series(1, 50) i;
INSERT INTO tenant_b.users SELECT i, 'b' || i || '@x', 'B' || i, NULL FROM generate_series(1, 30) i;
INSERT INTO {q(HOSTILE)}.users VALUES (1, 'h@x', 'H', 1);
INSERT INTO tenant_a.orders SELECT i, l, i * l, 'n' FROM generate_series(1, 20) i, generate_series(1, 3) l;
INSERT INTO tenant_b.orders SELECT i, 1, i, NULL FROM generate_series(1, 20) i;
""")
        self.sync()
        self.sql(f"""
BEGIN;
UPDATE tenant_a.users SET name = 'Anna' WHERE id = 1;
UPDATE tenant_a.users SET name = 'Anna2', score = 99 WHERE id = 1;
DELETE FROM tenant_b.users WHERE id BETWEEN 5 AND 9;
INSERT INTO tenant_b.users VALUES (5, 'again', 'new five', 5);
COMMIT;
UPDATE tenant_a.users SET id = 1000 WHERE id = 2;
UPDATE tenant_a.users SET id = 2 WHERE id = 3;
UPDATE tenant_a.orders SET line = line + 10 WHERE id = 4;
TRUNCATE tenant_b.orders;
INSERT INTO tenant_b.orders VALUES (1, 1, 1, 'after truncate');
DELETE FROM {q(HOSTILE)}.users;
INSERT INTO {q(HOSTILE)}.users VALUES (2, 'h2', 'H2', 2);
""")
        self.sync()
        cols = "id, email, name, score"
        tenants = ["tenant_a", "tenant_b", HOSTILE]
        self.assert_same("users", cols, tenants)
        self.assert_same("orders", "id, line, total, note", tenants, order="id, line")
        # TRUNCATE of tenant_b.orders left tenant_a's orders alone.
        self.assertEqual(self.wh("SELECT count(*) FROM zetl_raw.orders "
                                 "WHERE tenant_id = 'tenant_a'"), [["60"]])
        self.assertEqual(self.sql("SELECT count(*) FROM public.x"), [["0"]])
        # With two slot groups the tenants really are in different streams.
        self.assert_groups(tenants)
        self.assertEqual(len(self.streams()), self.SLOT_GROUPS)
        # Offsets: one row per stream at the last batch's LSN.
        expect = []
        for s in self.streams():
            last = self.batch_dirs(s)[-1]
            man = load_json(os.path.join(last, "manifest.json"))
            expect.append([s, str(man["last_lsn_int"]), os.path.basename(last)])
        self.assertEqual(self.wh("SELECT stream, last_lsn, batch FROM zetl_raw._zetl_offsets "
                                 "ORDER BY stream"), expect)
        # Applying every batch again changes nothing at all.
        snap = self.wh("SELECT u::text FROM zetl_raw.users u ORDER BY 1")
        self.apply_all()
        self.apply(self.batch_dirs()[0])
        self.assertEqual(self.wh("SELECT u::text FROM zetl_raw.users u ORDER BY 1"), snap)
        # The table has the documented shape and key.
        self.assertEqual(self.wh("""SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
FROM pg_attribute WHERE attrelid = 'zetl_raw.users'::regclass AND attnum > 0"""),
                         [["tenant_id text, id integer, email text, name character varying(40), "
                           "score numeric(10,2), _zetl_lsn bigint, "
                           "_zetl_synced_at timestamp with time zone"]])
        self.assertEqual(self.wh("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                 "WHERE conrelid = 'zetl_raw.orders'::regclass AND contype = 'p'"),
                         [["PRIMARY KEY (tenant_id, id, line)"]])

    def test_types_survive_exactly(self):
        self.sql("""
CREATE SCHEMA tenant_t;
CREATE TYPE tenant_t.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE tenant_t.types (
  id int PRIMARY KEY, i2 int2, i4 int4, i8 int8, n numeric, f4 float4, f8 float8,
  t text, b bytea, bo bool, d date, ts timestamp, tz timestamptz, iv interval, u uuid,
  j json, jb jsonb, ai int[], at text[], m tenant_t.mood, n2 numeric(30,2), vc varchar(20),
  tz3 timestamptz(3), bp char(5));
""")
        self.setup_zetl()
        self.sql(r"""
SET timezone = 'Europe/Berlin';
INSERT INTO tenant_t.types VALUES
 (1, -32768, 2147483647, -9223372036854775808, 123456789012345678901234567890.123456789,
  'NaN', 'Infinity', 'comma, "quote" and
newline \ backslash', '\x00ff10', true, '2024-02-29', '2024-01-01 12:34:56.789',
  '2024-06-01 10:00:00+02', '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2, {"b": null}]}', '{"k": "v", "n": 1.50}', '{1,NULL,3}', '{"x,y","NULL",NULL,""}', 'happy',
  1234567890123456789012345678.12, 'twenty chars exactly', '2024-01-01 00:00:00.123+00', 'ab'),
 (2, 0, 0, 0, '-Infinity', '-Infinity', '-0', 'NULL', '', false, '-infinity', 'infinity',
  '1970-01-01 00:00:00+00', '-1 days', '00000000-0000-0000-0000-000000000000', 'null', '[]',
  '{}', '{}', 'sad', -0.01, '', 'infinity', ''),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 1, 1, 1, 0.000000000000000000000000000001, 1.5e-45, 2.2250738585072014e-308,
  'unicode: żółć 日本 🎉 ' || chr(9) || 'tab', '\x', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, 'NULL', NULL, ' x ');
""")
        self.sync()
        cols = ("id, i2, i4, i8, n, f4, f8, t, b, bo, d, ts, tz, iv, u, j, jb, ai, at, m, n2, vc, "
                "tz3, bp")
        self.assert_same("types", cols, ["tenant_t"])
        # Exact types; the enum lands as text (each tenant has its own enum type).
        types = dict(self.wh("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                             "WHERE attrelid = 'zetl_raw.types'::regclass AND attnum > 0"))
        self.assertEqual(types["n2"], "numeric(30,2)")
        self.assertEqual(types["vc"], "character varying(20)")
        self.assertEqual(types["tz3"], "timestamp(3) with time zone")
        self.assertEqual(types["bp"], "character(5)")
        self.assertEqual(types["ai"], "integer[]")
        self.assertEqual(types["m"], "text")
        # NULL, empty string and the string NULL stay distinct.
        self.assertEqual(self.wh("SELECT t IS NULL, t FROM zetl_raw.types ORDER BY id"),
                         self.sql("SELECT t IS NULL, t FROM tenant_t.types ORDER BY id"))

    def test_unchanged_toast_is_never_overwritten(self):
        self.sql("""
CREATE SCHEMA tenant_x;
CREATE TABLE tenant_x.docs (id int PRIMARY KEY, title text, body text, n int);
ALTER TABLE tenant_x.docs ALTER COLUMN body SET STORAGE EXTERNAL;
""")
        self.setup_zetl()
        big = "SELECT string_agg(md5(i::text || '{}'), '') FROM generate_series(1, 32768) i"
        # Row 1: inserted in an earlier batch than its update.
        self.sql(f"INSERT INTO tenant_x.docs VALUES (1, 'one', ({big.format('a')}), 0)")
        self.sync()
        self.sql(f"""
UPDATE tenant_x.docs SET title = 'one v2' WHERE id = 1;
INSERT INTO tenant_x.docs VALUES (2, 'two', ({big.format('b')}), 0);
UPDATE tenant_x.docs SET title = 'two v2' WHERE id = 2;
UPDATE tenant_x.docs SET n = n + 1 WHERE id = 2;
INSERT INTO tenant_x.docs VALUES (3, 'three', ({big.format('c')}), 0);
BEGIN;
UPDATE tenant_x.docs SET id = 30 WHERE id = 3;
UPDATE tenant_x.docs SET title = 'thirty' WHERE id = 30;
COMMIT;
UPDATE tenant_x.docs SET id = 10 WHERE id = 1;
""")
        self.sync()
        # The archive really carried unchanged markers (not the values).
        self.assertIn("{2}", self.unchanged_markers())
        self.assert_same("docs", "id, title, md5(body), length(body), n", ["tenant_x"])
        self.assertEqual(self.wh("SELECT count(*) FROM zetl_raw.docs WHERE body IS NULL"),
                         [["0"]])
        # A key change in a later batch than the insert, read from the warehouse.
        self.sql("UPDATE tenant_x.docs SET id = 100, n = 7 WHERE id = 10")
        self.sync()
        self.assert_same("docs", "id, title, md5(body), length(body), n", ["tenant_x"])

    def unchanged_markers(self):
        from zetltest import read_archive
        _, rows = read_archive(os.path.join(self.work, "archive"))
        return [r["_zetl_unchanged"] for r in rows if r["_zetl_unchanged"]]

    def test_corrupted_file_applies_nothing(self):
        self.sql(users_ddl("tenant_a"))
        self.setup_zetl()
        self.sql("INSERT INTO tenant_a.users SELECT i, 'e', 'n', 1 FROM generate_series(1, 2000) i")
        self.capture()
        good = self.batch_dirs()[-1]
        bad = os.path.join(self.work, "bad", os.path.basename(good))
        shutil.copytree(good, bad)
        man = load_json(os.path.join(bad, "manifest.json"))
        fname = [f["file"] for f in man["files"] if f["table"] == "users"][0]
        path = os.path.join(bad, fname)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0x40
        with open(path, "wb") as f:
            f.write(bytes(data))
        err = self.apply(bad, expect=1)
        self.assertIn(fname, err)
        self.assertIn("sha256", err)
        self.assertEqual(self.wh("SELECT count(*) FROM zetl_raw._zetl_offsets"), [["0"]])
        self.assertEqual(self.wh("SELECT to_regclass('zetl_raw.users') IS NULL"), [["t"]])
        # The good copy applies.
        self.apply(good)
        self.assert_same("users", "id, email, name, score", ["tenant_a"])

    def test_table_without_primary_key_appends(self):
        self.sql("CREATE SCHEMA tenant_n; CREATE TABLE tenant_n.log (msg text, n int);")
        self.setup_zetl()
        self.sql("INSERT INTO tenant_n.log VALUES ('a', 1), ('a', 1), ('b', NULL);")
        self.sync()
        self.sql("INSERT INTO tenant_n.log VALUES ('c', 3);")
        self.sync()
        self.assert_same("log", "msg, n", ["tenant_n"], order="msg, n")
        self.assertEqual(self.wh("SELECT count(*) FROM pg_constraint WHERE "
                                 "conrelid = 'zetl_raw.log'::regclass AND contype = 'p'"), [["0"]])

    def test_keyless_delete_removes_one_of_equal_rows(self):
        """REPLICA IDENTITY FULL without a key: a delete (or an update's before-image)
        of one of several equal rows removes exactly one warehouse row, never all."""
        self.sql("CREATE SCHEMA tenant_n; CREATE TABLE tenant_n.log (msg text, n int); "
                 "ALTER TABLE tenant_n.log REPLICA IDENTITY FULL;")
        self.setup_zetl()
        self.sql("INSERT INTO tenant_n.log VALUES ('a', 1), ('a', 1), ('b', NULL), ('b', NULL), "
                 "('b', NULL)")
        self.sync()
        # One of the two equal rows, by ctid; one of three equal rows changed; two equal
        # rows inserted and one of them deleted again within the same batch.
        self.sql("""
DELETE FROM tenant_n.log WHERE ctid = (SELECT min(ctid) FROM tenant_n.log WHERE msg = 'a');
UPDATE tenant_n.log SET n = 5 WHERE ctid = (SELECT max(ctid) FROM tenant_n.log WHERE msg = 'b');
INSERT INTO tenant_n.log VALUES ('c', 3), ('c', 3);
DELETE FROM tenant_n.log WHERE ctid = (SELECT min(ctid) FROM tenant_n.log WHERE msg = 'c');
""")
        self.sync()
        self.assertEqual(self.sql("SELECT msg, n, count(*) FROM tenant_n.log GROUP BY 1, 2 "
                                  "ORDER BY 1, 2"),
                         [["a", "1", "1"], ["b", "5", "1"], ["b", None, "2"], ["c", "3", "1"]])
        self.assert_same("log", "msg, n", ["tenant_n"], order="msg, n")


class ModesTest(WarehouseBase):
    def test_soft_deletes_row_by_row(self):
        self.sql(users_ddl("tenant_a") + users_ddl("tenant_b"))
        self.setup_zetl(deletes="soft", schema="zetl_soft")
        self.sql("""
INSERT INTO tenant_a.users VALUES (1, 'e1', 'one', 1), (2, 'e2', 'two', 2), (3, 'e3', 'three', 3);
INSERT INTO tenant_b.orders VALUES (1, 1, 10, 'b');
INSERT INTO tenant_a.orders VALUES (1, 1, 10, 'a');
""")
        self.sync()
        self.sql("""
DELETE FROM tenant_a.users WHERE id = 2;
UPDATE tenant_a.users SET name = 'three v2' WHERE id = 3;
DELETE FROM tenant_a.users WHERE id = 1;
INSERT INTO tenant_a.users VALUES (1, 'e1', 'one again', 1);
UPDATE tenant_a.users SET id = 4 WHERE id = 3;
TRUNCATE tenant_b.orders;
""")
        self.sync()
        got = self.wh("SELECT id, name, _zetl_deleted FROM zetl_soft.users ORDER BY id")
        self.assertEqual(got, [["1", "one again", "f"], ["2", "two", "t"],
                               ["3", "three v2", "t"], ["4", "three v2", "f"]])
        self.assertEqual(self.wh("SELECT tenant_id, _zetl_deleted FROM zetl_soft.orders "
                                 "ORDER BY 1"), [["tenant_a", "f"], ["tenant_b", "t"]])
        # Deleted rows carry the LSN of the delete.
        self.assertEqual(self.wh("SELECT count(DISTINCT _zetl_lsn) FROM zetl_soft.users "
                                 "WHERE id IN (2, 3)"), [["2"]])
        # The live rows are the source.
        src = self.sql("SELECT id, name FROM tenant_a.users ORDER BY id")
        self.assertEqual(self.wh("SELECT id, name FROM zetl_soft.users WHERE NOT _zetl_deleted "
                                 "ORDER BY id"), src)

    def test_history_row_by_row(self):
        self.sql(users_ddl("tenant_a"))
        self.setup_zetl(deletes="history", schema="zetl_hist")
        self.sql("""
INSERT INTO tenant_a.users VALUES (1, 'e', 'v1', 1);
UPDATE tenant_a.users SET name = 'v2' WHERE id = 1;
""")
        self.sync()
        self.sql("""
DELETE FROM tenant_a.users WHERE id = 1;
BEGIN;
INSERT INTO tenant_a.users VALUES (2, 'e', 'w1', 1);
UPDATE tenant_a.users SET name = 'w2' WHERE id = 2;
COMMIT;
""")
        self.sync()
        from zetltest import read_archive
        _, rows = read_archive(os.path.join(self.work, "archive"))
        lsn = sorted({int(r["_zetl_lsn"]) for r in rows if r["_table"] == "users"})
        self.assertEqual(len(lsn), 4)
        got = self.wh("SELECT id, name, _zetl_valid_from, _zetl_valid_to FROM zetl_hist.users "
                      "ORDER BY _zetl_valid_from")
        self.assertEqual(got, [["1", "v1", str(lsn[0]), str(lsn[1])],
                               ["1", "v2", str(lsn[1]), str(lsn[2])],
                               ["2", "w2", str(lsn[3]), None]])
        self.assertEqual(self.wh("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                 "WHERE conrelid = 'zetl_hist.users'::regclass AND contype = 'p'"),
                         [["PRIMARY KEY (tenant_id, id, _zetl_valid_from)"]])

    def test_history_key_changed_twice_in_one_batch(self):
        """Two transactions changing one key in the same batch: the version current
        before the batch closes at the FIRST of them, each new version at the next."""
        self.sql(users_ddl("tenant_a"))
        self.setup_zetl(deletes="history", schema="zetl_hist")
        self.sql("INSERT INTO tenant_a.users VALUES (1, 'e', 'v0', 0), (2, 'f', 'w0', 0)")
        self.sync()
        # Four source transactions (psql autocommits each statement), one batch.
        self.sql("""
UPDATE tenant_a.users SET name = 'v1' WHERE id = 1;
UPDATE tenant_a.users SET name = 'v2', score = 2 WHERE id = 1;
UPDATE tenant_a.users SET name = 'w1' WHERE id = 2;
DELETE FROM tenant_a.users WHERE id = 2;
""")
        self.capture()
        self.assertEqual(len(self.batch_dirs()), 2, self.batch_dirs())
        self.assertEqual(load_json(os.path.join(self.batch_dirs()[1], "manifest.json"))
                         ["transactions"], 4)
        self.apply_all()
        from zetltest import read_archive
        _, rows = read_archive(os.path.join(self.work, "archive"))
        lsn = sorted({int(r["_zetl_lsn"]) for r in rows if r["_table"] == "users"})
        self.assertEqual(len(lsn), 5)
        l0, l1, l2, l3, l4 = map(str, lsn)
        got = self.wh("SELECT id, name, _zetl_valid_from, _zetl_valid_to FROM zetl_hist.users "
                      "ORDER BY id, _zetl_valid_from")
        self.assertEqual(got, [["1", "v0", l0, l1], ["1", "v1", l1, l2], ["1", "v2", l2, None],
                               ["2", "w0", l0, l3], ["2", "w1", l3, l4]])
        # Current state is the source.
        self.assertEqual(self.wh("SELECT id, name, score FROM zetl_hist.users "
                                 "WHERE _zetl_valid_to IS NULL ORDER BY id"),
                         self.sql("SELECT id, name, score FROM tenant_a.users ORDER BY id"))


class EvolutionTest(WarehouseBase):
    def test_added_dropped_and_incompatible_columns(self):
        self.sql("""
CREATE SCHEMA tenant_a;
CREATE TABLE tenant_a.items (id int PRIMARY KEY, name varchar(10), extra text, qty int2);
CREATE TABLE tenant_a.kv (id int PRIMARY KEY, v int);
CREATE TABLE tenant_a.other (id int PRIMARY KEY, v text);
""")
        self.setup_zetl()
        self.sql("""
INSERT INTO tenant_a.items VALUES (1, 'a', 'x', 1);
INSERT INTO tenant_a.kv VALUES (1, 10);
INSERT INTO tenant_a.items VALUES (2, 'b', 'y', 2);
INSERT INTO tenant_a.kv VALUES (2, 20);
INSERT INTO tenant_a.other VALUES (1, 'o1');
""")
        self.sync()
        # Added column, widened types (varchar(10) -> varchar(30), int2 -> int8).
        self.sql("""
ALTER TABLE tenant_a.items ADD COLUMN price numeric(8,2);
ALTER TABLE tenant_a.items ALTER COLUMN name TYPE varchar(30), ALTER COLUMN qty TYPE int8;
INSERT INTO tenant_a.items VALUES (3, 'a longer name', 'z', 3000000000, 9.99);
UPDATE tenant_a.items SET price = 1 WHERE id = 1;
""")
        self.sync()
        self.assert_same("items", "id, name, extra, qty, price", ["tenant_a"])
        types = dict(self.wh("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                             "WHERE attrelid = 'zetl_raw.items'::regclass AND attnum > 0"))
        self.assertEqual((types["name"], types["qty"], types["price"]),
                         ("character varying(30)", "bigint", "numeric(8,2)"))
        # Dropped column: it stays in the warehouse; rows written later have NULL there.
        self.sql("""
ALTER TABLE tenant_a.items DROP COLUMN extra;
INSERT INTO tenant_a.items VALUES (4, 'd', 4, 4);
""")
        self.sync()
        self.assertEqual(self.wh("SELECT id, extra FROM zetl_raw.items ORDER BY id"),
                         [["1", "x"], ["2", "y"], ["3", "z"], ["4", None]])
        self.assert_same("items", "id, name, qty, price", ["tenant_a"])
        # Incompatible change (int -> text): only that table stops.
        self.sql("""
ALTER TABLE tenant_a.kv ALTER COLUMN v TYPE text;
INSERT INTO tenant_a.kv VALUES (3, 'thirty');
INSERT INTO tenant_a.other VALUES (2, 'o2');
""")
        err = self.sync()
        self.assertIn('"kv"', err)
        self.assertIn("stopped", err)
        state = self.wh("SELECT table_name, state, reason FROM zetl_raw._zetl_table_state "
                        "WHERE state = 'stopped'")
        self.assertEqual([s[:2] for s in state], [["kv", "stopped"]])
        self.assertIn("changed type from int4 to text", state[0][2])
        self.sql("""
INSERT INTO tenant_a.kv VALUES (4, 'forty');
INSERT INTO tenant_a.other VALUES (3, 'o3');
""")
        err = self.sync()
        self.assertIn("stopped", err)
        self.assert_same("other", "id, v", ["tenant_a"])
        self.assertEqual(self.wh("SELECT id, v FROM zetl_raw.kv ORDER BY id"),
                         [["1", "10"], ["2", "20"]])
        # The documented resync: widen the warehouse column, clear the state, re-apply.
        self.wh("ALTER TABLE zetl_raw.kv ALTER COLUMN v TYPE text; "
                "DELETE FROM zetl_raw._zetl_table_state WHERE table_name = 'kv'")
        rc, _, err = run_zetl(["resync", "--config", self.whconfig, "kv"], cwd=self.work)
        self.assertEqual(rc, 0, err)
        self.assertIn("resync of table \"kv\"", err)
        self.assert_same("kv", "id, v", ["tenant_a"])
        # Running it again and the normal apply change nothing.
        rc, _, err = run_zetl(["resync", "--config", self.whconfig, "kv"], cwd=self.work)
        self.assertEqual(rc, 0, err)
        self.apply_all()
        self.assertEqual(self.wh("SELECT count(*) FROM zetl_raw.kv"), [["4"]])


    def test_type_change_runs_before_the_apply(self):
        """Redshift refuses ALTER COLUMN ... TYPE in any transaction block: zetl widens a
        column in a statement (here, a transaction) of its own before the apply, never in
        the apply's transaction. An event trigger plays Redshift's refusal."""
        self.sql("""
CREATE SCHEMA tenant_a;
CREATE SCHEMA tenant_b;
CREATE TABLE tenant_a.items (id int PRIMARY KEY, name varchar(10), qty int2, at timestamptz,
                             ok bool, raw bytea, code char(4), doc jsonb);
CREATE TABLE tenant_b.items (LIKE tenant_a.items INCLUDING ALL);
""")
        self.setup_zetl()
        self.sql("""
INSERT INTO tenant_a.items VALUES (1, 'a', 1, '2024-01-02 03:04:05.678901+02', true, '\\x00ff',
                                   'ab', '{"k": [1, 2]}');
INSERT INTO tenant_b.items VALUES (1, 'b', 2, NULL, false, NULL, NULL, NULL);
""")
        self.sync()
        self.wh("""
CREATE FUNCTION refuse_type_change_in_txn() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_query() ~* 'ALTER COLUMN .* TYPE' AND txid_current_if_assigned() IS NOT NULL THEN
    RAISE EXCEPTION 'ALTER COLUMN TYPE is not allowed within a transaction block';
  END IF;
END $$;
CREATE EVENT TRIGGER refuse_type_change ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION refuse_type_change_in_txn();
""")
        with self.assertRaises(RuntimeError):  # the stand-in refuses what it should
            self.wh("BEGIN; SELECT txid_current(); "
                    "ALTER TABLE zetl_raw.items ALTER COLUMN name TYPE varchar(11); COMMIT;")
        # Both tenants' streams widen the same columns, and add one, in the same batch.
        self.sql("""
ALTER TABLE tenant_a.items ALTER COLUMN name TYPE varchar(30), ALTER COLUMN qty TYPE int8,
  ADD COLUMN price numeric(8,2);
ALTER TABLE tenant_b.items ALTER COLUMN name TYPE varchar(30), ALTER COLUMN qty TYPE int8,
  ADD COLUMN price numeric(8,2);
INSERT INTO tenant_a.items VALUES (2, 'a longer name', 3000000000, now(), NULL, '\\x', 'c',
                                   '[]', 9.99);
UPDATE tenant_b.items SET name = 'another long name', price = 1 WHERE id = 1;
""")
        self.sync()
        cols = "id, name, qty, at, ok, raw, code, doc, price"
        self.assert_same("items", cols, ["tenant_a", "tenant_b"])
        types = dict(self.wh("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                             "WHERE attrelid = 'zetl_raw.items'::regclass AND attnum > 0"))
        self.assertEqual((types["name"], types["qty"], types["price"]),
                         ("character varying(30)", "bigint", "numeric(8,2)"))
        self.assertEqual(self.wh("SELECT count(*) FROM zetl_raw._zetl_table_state "
                                 "WHERE state = 'stopped'"), [["0"]])

        # zetl verify's warehouse-neutral hash (Redshift's) agrees on every type here ...
        env = {"ZETL_VERIFY_HASH": "portable"}
        rc, out, err = run_zetl(["verify", "--config", self.whconfig], cwd=self.work, env=env)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("1 json or array column(s) not compared", out)
        # ... and tells a microsecond, a byte and a NULL apart.
        for change in ("at = at + interval '1 microsecond' WHERE id = 1",
                       "raw = '\\x00fe' WHERE id = 1",
                       "ok = NULL WHERE id = 1"):
            with self.subTest(change=change):
                before = self.wh(f"SELECT at, raw, code, ok FROM zetl_raw.items "
                                 f"WHERE tenant_id = 'tenant_a' AND id = 1")
                self.wh(f"UPDATE zetl_raw.items SET {change} AND tenant_id = 'tenant_a'")
                rc, out, err = run_zetl(["verify", "--config", self.whconfig], cwd=self.work,
                                        env=env)
                self.assertEqual(rc, 1, out + err)
                self.assertIn("values differ:        (id)=1", out)
                at, raw, code, ok = before[0]
                self.wh("UPDATE zetl_raw.items SET at = " + (lit(at) if at else "NULL") +
                        ", raw = " + (lit(raw) if raw else "NULL") +
                        ", code = " + (lit(code) if code else "NULL") +
                        ", ok = " + (lit(ok) if ok else "NULL") +
                        " WHERE tenant_id = 'tenant_a' AND id = 1")
        rc, out, err = run_zetl(["verify", "--config", self.whconfig], cwd=self.work, env=env)
        self.assertEqual(rc, 0, out + err)


# The same tests with the tenant schemas spread over two slot groups (streams).
class HardModeSlotGroups2Test(HardModeTest):
    SLOT_GROUPS = 2


class ModesSlotGroups2Test(ModesTest):
    SLOT_GROUPS = 2


class EvolutionSlotGroups2Test(EvolutionTest):
    SLOT_GROUPS = 2


if __name__ == "__main__":
    main()
