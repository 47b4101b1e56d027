"""Existing rows and tenants that appear later: the initial snapshot (with a
write load and two kills while it copies), tenants and tables created while
zetl runs, `zetl snapshot`, tables without a primary key.  Every result is
checked in the test itself: per tenant and table, the (key, md5 of the row)
pairs of the source equal the warehouse's, so a lost, stale or duplicated
row fails."""

import glob
import json
import os
import random
import shutil
import signal
import threading
import time

from zetltest import config, main, run_zetl, slot_group, SourceAndWarehouse, Zetl

USERS = "id int PRIMARY KEY, email text, score numeric(10,2), big text"
TYPES = ("id int PRIMARY KEY, t text, n numeric(30,10), ts timestamptz, j jsonb, arr int[], "
         "b bytea, u text, f float8, m public.mood, big text")
COLS = {
    "users": ["id", "email", "score", "big"],
    "types": ["id", "t", "n", "ts", "j", "arr", "b", "u", "f", "m", "big"],
}


class SnapshotBase(SourceAndWarehouse):
    WORK_PREFIX = "zetl-snap-"

    def setUp(self):
        super().setUp()
        self.sql("CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy')")
        self.z = None

    def tearDown(self):
        if self.z is not None and self.z.proc is not None and self.z.proc.poll() is None:
            self.z.kill()
        Zetl.kill_all()
        self.src.drop_slots(self.db)
        self.src.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        self.whc.psql(f'DROP DATABASE "{self.whdb}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def sql(self, text):
        return self.src.psql(text, db=self.db)

    def wh(self, text):
        return self.whc.psql(text, db=self.whdb)

    def zetl(self, groups=2, source_extra="", schemas=("tenant_*",), refresh_ms=None, dsn=None):
        cfg = config(self.src, self.db, slot_groups=groups, schemas=schemas, dsn=dsn,
                     extra=f"""warehouse:
  kind: postgres
  dsn: "{self.whc.dsn(self.whdb)}"
  schema: zetl_raw
""")
        if source_extra:
            cfg = cfg.replace("  slot_groups:", source_extra + "  slot_groups:", 1)
        if refresh_ms is not None:
            lines = cfg.split("\n")
            i = next(k for k, ln in enumerate(lines) if ln.startswith("    schemas:"))
            lines.insert(i + 1, f"    refresh_ms: {refresh_ms}")
            cfg = "\n".join(lines)
        self.z = Zetl(self.work, cfg)
        return self.z

    def make_tenant(self, t, rows, tables=("users", "types")):
        ddl = {"users": USERS, "types": TYPES}
        self.sql("".join([f"CREATE SCHEMA {t};"] +
                         [f"CREATE TABLE {t}.{name} ({ddl[name]});" for name in tables] +
                         [self.fill(t, name, 1, rows) for name in tables]))

    @staticmethod
    def fill(t, table, lo, hi):
        if table == "users":
            return (f"INSERT INTO {t}.users SELECT g, 'u' || g || '@x', g % 1000 / 7.0, "
                    f"CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 300) END "
                    f"FROM generate_series({lo}, {hi}) g;")
        return (f"INSERT INTO {t}.types SELECT g, CASE g % 6 WHEN 0 THEN NULL WHEN 1 THEN '' "
                f"WHEN 2 THEN 'NULL' WHEN 3 THEN E'a,\"b\"\\n\\tc\\\\d' ELSE 'x' || g END, "
                f"g * 1.0000000001, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 min', "
                f"jsonb_build_object('k', g, 's', 'v\"' || g), ARRAY[g, NULL, -g], "
                f"decode(md5(g::text), 'hex'), 'ünï ☃ ' || g, g / 3.0, "
                f"(ARRAY['sad','ok','happy'])[g % 3 + 1]::public.mood, "
                f"CASE WHEN g % 97 = 0 THEN repeat(md5(g::text), 400) END "
                f"FROM generate_series({lo}, {hi}) g;")

    def rows(self, side, t, table, schema="zetl_raw"):
        cols = ", ".join(COLS[table])
        if side == "src":
            q = f"SELECT id, md5(ROW({cols})::text) FROM {t}.{table}"
            return sorted(map(tuple, self.sql(q)))
        q = (f"SELECT id, md5(ROW({cols})::text) FROM {schema}.{table} "
             f"WHERE tenant_id = '{t}'")
        return sorted(map(tuple, self.wh(q)))

    def assert_same(self, tenants, tables=("users", "types"), schema="zetl_raw"):
        for t in tenants:
            for table in tables:
                src, dst = self.rows("src", t, table), self.rows("wh", t, table, schema)
                if src != dst:
                    s, d = set(src), set(dst)
                    self.fail(f"{t}.{table}: {len(src)} source rows, {len(dst)} warehouse rows; "
                              f"missing or stale {sorted(s - d)[:5]}, extra {sorted(d - s)[:5]}"
                              f"\n{self.z.log()[-3000:] if self.z else ''}")

    def wait_for(self, cond, timeout, what, interval=0.2):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return
            time.sleep(interval)
        self.fail(f"timed out waiting for {what}\n{self.z.log()[-4000:] if self.z else ''}")

    def state(self):
        out = {}
        for p in glob.glob(os.path.join(self.work, "zetl-data/snapshot/*.json")):
            with open(p) as f:
                for tb in json.load(f).get("tables", []):
                    out[(tb["schema"], tb["table"])] = tb
        return out

    def verify(self):
        rc, out, err = run_zetl(["verify", "--config", self.z.config], cwd=self.work)
        self.assertEqual(rc, 0, out + err)


class Writer(threading.Thread):
    """Inserts, updates (some leaving the TOAST column unchanged) and deletes
    rows of the tenants' tables until stopped."""

    def __init__(self, test, tenants, start_id):
        super().__init__(daemon=True)
        self.test, self.tenants, self.next_id = test, tenants, start_id
        self.halt = threading.Event()
        self.rounds = 0
        self.rng = random.Random(7)

    def run(self):
        while not self.halt.is_set():
            stmts = ["BEGIN;"]
            for t in self.tenants:
                a = self.rng.randint(1, self.next_id)
                stmts.append(SnapshotBase.fill(t, "users", self.next_id, self.next_id + 3))
                stmts.append(SnapshotBase.fill(t, "types", self.next_id, self.next_id + 1))
                stmts.append(f"UPDATE {t}.users SET email = email || '+' WHERE id % 50 = 0 AND "
                             f"id BETWEEN {a} AND {a + 400};")
                stmts.append(f"UPDATE {t}.users SET score = score + 1 WHERE id BETWEEN {a} AND "
                             f"{a + 30};")
                stmts.append(f"DELETE FROM {t}.users WHERE id BETWEEN {a + 31} AND {a + 33};")
                stmts.append(f"UPDATE {t}.types SET t = 'w' || id, big = CASE WHEN id % 2 = 0 "
                             f"THEN big END WHERE id BETWEEN {a} AND {a + 20};")
                stmts.append(f"UPDATE {t}.users SET id = -id WHERE id = {a + 40};")
            stmts.append("COMMIT;")
            self.next_id += 4
            self.test.sql("".join(stmts))
            self.rounds += 1

    def stop(self):
        self.halt.set()
        self.join(60)


class InitialSnapshot(SnapshotBase):
    def test_existing_rows_with_writes_and_two_kills(self):
        tenants = ["tenant_a", "tenant_b", "tenant_c", "tenant_d"]
        for t in tenants:
            self.make_tenant(t, 60000)
        z = self.zetl(groups=2)
        writer = Writer(self, tenants, 60001)
        writer.start()
        try:
            resumed = 0
            for _ in range(2):
                before = sum(v.get("rows", 0) for v in self.state().values())
                z.start()

                # A table copied in part: the kill leaves something to resume.  At once:
                # the rest of a table is a chunk or two, well under a second's work.
                def copied():
                    st = self.state()
                    return (sum(v.get("rows", 0) for v in st.values()) > before and
                            any(v["state"] == "pending" and v.get("rows", 0) > 0
                                for v in st.values()))
                self.wait_for(copied, 60, "a table copied in part", interval=0.01)
                z.kill()
            z.start()
            self.wait_for(lambda: self.state() and all(v["state"] == "done"
                                                       for v in self.state().values()),
                          180, "the snapshot to finish")
            time.sleep(1)
        finally:
            writer.stop()
        self.assertGreater(writer.rounds, 3)
        z.kill(signal.SIGTERM)
        self.assertEqual(z.run_once(timeout=180), 0, z.log())
        with open(z.stderr_path) as f:
            log = f.read()
        resumed = log.count("resumes after")
        self.assertGreater(resumed, 0, "no snapshot resumed after a kill:\n" + log[-3000:])
        self.assert_same(tenants)
        self.verify()
        # The archive holds the snapshot too: replayed into an empty schema, it gives the source.
        rc, out, err = run_zetl(["replay", "--config", z.config, "--into", "zetl_copy"],
                                cwd=self.work, timeout=300)
        self.assertEqual(rc, 0, out + err)
        self.assert_same(tenants, schema="zetl_copy")
        # The archive marks the batches that carry snapshot rows.
        marked = 0
        for p in glob.glob(os.path.join(self.work, "archive/*/*/manifest.json")):
            with open(p) as f:
                marked += json.load(f).get("snapshot_rows", 0) > 0
        self.assertGreater(marked, 0)

    def test_never_keeps_existing_rows_out(self):
        self.make_tenant("tenant_a", 100)
        z = self.zetl(groups=1, source_extra="  snapshot: never\n")
        self.assertEqual(z.run_once(), 0, z.log())
        self.sql("INSERT INTO tenant_a.users VALUES (1000, 'new', 1, NULL)")
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertEqual(self.wh("SELECT id FROM zetl_raw.users"), [["1000"]])

    def test_table_without_primary_key_is_copied_whole(self):
        self.sql("CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.log (at int, msg text);"
                 "ALTER TABLE tenant_a.log REPLICA IDENTITY FULL;"
                 "INSERT INTO tenant_a.log SELECT g % 10, 'm' || g FROM generate_series(1, 5000) g;")
        z = self.zetl(groups=1)
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertIn("has no primary key: it is copied whole", z.log())
        self.assertEqual(self.wh("SELECT count(*), count(DISTINCT msg) FROM zetl_raw.log"),
                         [["5000", "5000"]])


    def test_table_the_role_cannot_read_stops_with_its_name(self):
        self.sql("DROP ROLE IF EXISTS rep_snap; CREATE ROLE rep_snap LOGIN REPLICATION "
                 "PASSWORD 'pw';"
                 f"GRANT CREATE ON DATABASE \"{self.db}\" TO rep_snap;")
        self.make_tenant("tenant_a", 500, tables=("users",))
        self.sql("CREATE TABLE tenant_a.secret (id int PRIMARY KEY, v text);"
                 "INSERT INTO tenant_a.secret VALUES (1, 's');"
                 "ALTER TABLE tenant_a.users OWNER TO rep_snap;"
                 "ALTER TABLE tenant_a.secret OWNER TO rep_snap;"
                 "GRANT USAGE ON SCHEMA tenant_a TO rep_snap;"
                 "REVOKE SELECT ON tenant_a.secret FROM rep_snap;")
        z = self.zetl(groups=1, dsn=self.src.dsn(self.db, user="rep_snap", password="pw"))
        self.assertEqual(z.run_once(), 1, z.log())
        self.assertRegex(z.log(), r'snapshot of "tenant_a"\."secret": permission denied')
        slot = self.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'zetl_0'")
        self.assertEqual(slot, [["1"]])
        self.sql("GRANT SELECT ON tenant_a.secret TO rep_snap")
        self.assertEqual(z.run_once(), 0, z.log())
        self.assert_same(["tenant_a"], tables=("users",))
        self.assertEqual(self.wh("SELECT v FROM zetl_raw.secret"), [["s"]])

class LiveTenants(SnapshotBase):
    def new_names(self, groups):
        """Two new tenant names, one in each slot group."""
        names, i = {}, 0
        while len(names) < groups:
            n = f"tenant_new{i}"
            names.setdefault(slot_group(n, groups), n)
            i += 1
        return sorted(names.values())

    def onboard(self, source_extra):
        self.make_tenant("tenant_a", 2000)
        # Both new tenants may fall in a group that had no tenant at start.
        z = self.zetl(groups=2, source_extra=source_extra, refresh_ms=500)
        z.start()
        self.wait_for(lambda: self.wh("SELECT to_regclass('zetl_raw.users')")[0][0] and
                      self.wh("SELECT count(*) FROM zetl_raw.users")[0][0] == "2000",
                      60, "the initial snapshot")
        new = self.new_names(2)
        started = time.time()
        for t in new:
            # Tables and rows in one transaction, then more rows right after.
            self.sql("BEGIN;" + f"CREATE SCHEMA {t}; CREATE TABLE {t}.users ({USERS});"
                     f"CREATE TABLE {t}.types ({TYPES});" + self.fill(t, "users", 1, 3000) +
                     self.fill(t, "types", 1, 500) + "COMMIT;")
            for i in range(5):
                self.sql(self.fill(t, "users", 3001 + i * 10, 3010 + i * 10) +
                         f"UPDATE {t}.users SET email = 'changed' WHERE id = {i + 1};" +
                         f"DELETE FROM {t}.users WHERE id = {100 + i};")
        # A new table in an existing tenant, created with rows, and written after.
        self.sql(f"BEGIN; CREATE TABLE tenant_a.extra_notes (id int PRIMARY KEY, note text);"
                 f"INSERT INTO tenant_a.extra_notes SELECT g, 'n' || g FROM "
                 f"generate_series(1, 700) g; COMMIT;"
                 f"INSERT INTO tenant_a.extra_notes VALUES (701, 'after');")

        def arrived():
            for t in new:
                if self.rows("src", t, "users") != self.rows("wh", t, "users"):
                    return False
            return (self.wh("SELECT to_regclass('zetl_raw.extra_notes')")[0][0] is not None and
                    self.wh("SELECT count(*) FROM zetl_raw.extra_notes")[0][0] == "701")
        self.wait_for(arrived, 60, "the new tenants and table")
        print(f"new tenants in the warehouse {time.time() - started:.1f} s after CREATE SCHEMA")
        z.kill(signal.SIGTERM)
        self.assertEqual(z.run_once(), 0, z.log())
        self.assert_same(["tenant_a"] + new)
        self.assertEqual(self.wh("SELECT count(*) FROM zetl_raw.extra_notes")[0][0], "701")
        self.verify()
        return new

    def test_new_tenants_and_table_schema_publication(self):
        self.onboard("")

    def test_new_tenants_and_table_table_list_publication(self):
        # A table pattern makes the publications list tables: new ones are added one by one.
        new = self.onboard("  tables: [\"users\", \"types\", \"extra_*\"]\n")
        pubs = self.sql("SELECT count(*) FROM pg_publication_tables WHERE tablename = 'extra_notes'")
        self.assertEqual(pubs, [["1"]])
        self.assertTrue(new)

    def test_dropped_tenant_is_no_longer_followed(self):
        self.make_tenant("tenant_a", 100)
        self.make_tenant("tenant_b", 100)
        z = self.zetl(groups=1, refresh_ms=300)
        z.start()
        self.wait_for(lambda: self.wh("SELECT to_regclass('zetl_raw.users')")[0][0] and
                      self.wh("SELECT count(*) FROM zetl_raw.users")[0][0] == "200", 60,
                      "the initial snapshot")
        self.sql("DROP SCHEMA tenant_b CASCADE")
        self.sql("INSERT INTO tenant_a.users VALUES (5000, 'x', 1, NULL)")
        self.wait_for(lambda: "\"tenant_b\" no longer exists" in z.log(), 30, "the drop noticed")
        self.wait_for(lambda: self.wh("SELECT count(*) FROM zetl_raw.users WHERE id = 5000")
                      == [["1"]], 30, "the later row")
        z.kill(signal.SIGTERM)


class Resnapshot(SnapshotBase):
    def test_snapshot_command_with_and_without_daemon(self):
        self.make_tenant("tenant_a", 3000)
        self.make_tenant("tenant_b", 3000)
        z = self.zetl(groups=2)
        self.assertEqual(z.run_once(), 0, z.log())
        self.assert_same(["tenant_a", "tenant_b"])
        # The warehouse loses rows behind zetl's back; a re-snapshot brings them back.
        self.wh("DELETE FROM zetl_raw.users WHERE tenant_id = 'tenant_a' AND id % 3 = 0")
        rc, out, err = run_zetl(["snapshot", "--config", z.config, "--tenant", "tenant_a",
                                 "--table", "users"], cwd=self.work, timeout=180)
        self.assertEqual(rc, 0, out + err)
        self.assert_same(["tenant_a", "tenant_b"])
        # Bad names are named.
        rc, out, err = run_zetl(["snapshot", "--config", z.config, "--tenant", "tenant_zz"],
                                cwd=self.work, timeout=60)
        self.assertEqual(rc, 2, out + err)
        self.assertIn("tenant_zz", err)
        # With a daemon running, the daemon copies while it streams.
        z.start()
        time.sleep(1)
        self.wh("DELETE FROM zetl_raw.types WHERE tenant_id = 'tenant_b' AND id % 2 = 0")
        writer = Writer(self, ["tenant_a", "tenant_b"], 10000)
        writer.start()
        try:
            rc, out, err = run_zetl(["snapshot", "--config", z.config, "--tenant", "tenant_b"],
                                    cwd=self.work, timeout=180)
        finally:
            writer.stop()
        self.assertEqual(rc, 0, out + err)
        self.assertIn("running zetl queued the snapshot", err)
        z.kill(signal.SIGTERM)
        self.assertEqual(z.run_once(), 0, z.log())
        self.assert_same(["tenant_a", "tenant_b"])


if __name__ == "__main__":
    main()
