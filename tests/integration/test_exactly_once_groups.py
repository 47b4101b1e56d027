"""Exactly once with several slot groups feeding shared warehouse tables: the
DDL race between streams, the repair of a warehouse written by an earlier
release, and one writer per buffer.dir and per slot.  Every result is
checked by comparing source and warehouse rows in the test itself."""

import os
import shutil
import signal
import time

from zetltest import config, main, run_zetl, slot_group, SourceAndWarehouse, Zetl

TABLES = {
    "users": "id int PRIMARY KEY, email text, score numeric(10,2)",
    "orders": "id bigint PRIMARY KEY, user_id int, note text",
    "items": "id int PRIMARY KEY, name varchar(20)",
}



class GroupsBase(SourceAndWarehouse):
    WORK_PREFIX = "zetl-groups-"

    def setUp(self):
        super().setUp()
        self.procs = []

    def tearDown(self):
        for z in self.procs:
            if z.proc is not None and z.proc.poll() is None:
                z.kill()
        Zetl.kill_all()
        self.src.drop_slots(self.db)
        self.src.psql(f'DROP DATABASE "{self.db}" WITH (FORCE)')
        self.whc.psql(f'DROP DATABASE "{self.whdb}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def zetl(self, groups, workdir=None):
        workdir = workdir or self.work
        os.makedirs(workdir, exist_ok=True)
        z = Zetl(workdir, config(self.src, self.db, slot_groups=groups, extra=f"""warehouse:
  kind: postgres
  dsn: "{self.whc.dsn(self.whdb)}"
  schema: zetl_raw
"""))
        self.procs.append(z)
        return z

    def sql(self, text):
        return self.src.psql(text, db=self.db)

    def wh(self, text):
        return self.whc.psql(text, db=self.whdb)

    def make_tenants(self, tenants):
        self.sql("".join(f"CREATE SCHEMA {t};" + "".join(
            f"CREATE TABLE {t}.{name} ({cols});" for name, cols in TABLES.items())
            for t in tenants))

    def assert_same(self, tenants):
        """Source rows of each tenant equal the warehouse rows of that tenant, exactly."""
        for table in TABLES:
            if not self.sql(f"SELECT 1 FROM {tenants[0]}.{table} UNION ALL "
                            f"SELECT 1 FROM pg_class WHERE relname = '{table}' AND "
                            f"relnamespace = '{tenants[0]}'::regnamespace AND false LIMIT 1") \
                    and not self.wh(f"SELECT to_regclass('zetl_raw.{table}')")[0][0]:
                continue  # never written to: no warehouse table yet
            cols = [r[0] for r in self.sql(
                f"SELECT attname FROM pg_attribute WHERE attrelid = '{tenants[0]}.{table}'"
                f"::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum")]
            sel = ", ".join(f"{c}::text" for c in cols)
            dup = self.wh(f"SELECT count(*) FROM (SELECT tenant_id, id FROM zetl_raw.{table} "
                          f"GROUP BY 1, 2 HAVING count(*) > 1) d")
            self.assertEqual(dup, [["0"]], f"duplicate keys in zetl_raw.{table}")
            for t in tenants:
                src = self.sql(f"SELECT {sel} FROM {t}.{table} ORDER BY id")
                got = self.wh(f"SELECT {sel} FROM zetl_raw.{table} WHERE tenant_id = '{t}' "
                              f"ORDER BY id")
                self.assertEqual(got, src, f"{t}.{table} differs in the warehouse")
            others = self.wh(f"SELECT DISTINCT tenant_id FROM zetl_raw.{table} WHERE "
                             f"tenant_id <> ALL (ARRAY[{', '.join(repr(t) for t in tenants)}])")
            self.assertEqual(others, [], f"rows of unknown tenants in zetl_raw.{table}")


class SharedTablesTest(GroupsBase):
    def test_many_tenants_over_four_groups_race_on_ddl(self):
        """Four streams create, then widen, the same warehouse tables at once: a lost
        race is never fatal and no tenant's rows go missing (300 tenants lost 224 once)."""
        tenants = [f"tenant_{i:03d}" for i in range(48)]
        self.assertEqual(len({slot_group(t, 4) for t in tenants}), 4)
        self.make_tenants(tenants)
        z = self.zetl(4)
        self.assertEqual(z.run_once(), 0, z.log())  # slots and publications
        self.sql("".join(
            f"INSERT INTO {t}.users SELECT g, 'u' || g, g FROM generate_series(1, 20) g;"
            f"INSERT INTO {t}.orders SELECT g, g % 5, 'n' FROM generate_series(1, 10) g;"
            f"INSERT INTO {t}.items SELECT g, 'i' || g FROM generate_series(1, 5) g;"
            for t in tenants))
        self.assertEqual(z.run_once(), 0, z.log())
        self.assert_same(tenants)
        # Every stream widens and extends the same tables in the same moment.
        self.sql("".join(
            f"ALTER TABLE {t}.items ALTER COLUMN name TYPE varchar(40);"
            f"ALTER TABLE {t}.items ADD COLUMN price numeric(8,2);"
            f"UPDATE {t}.items SET name = 'a longer name than twenty', price = id WHERE id < 3;"
            f"DELETE FROM {t}.users WHERE id % 4 = 0;"
            f"UPDATE {t}.users SET id = id + 100 WHERE id = 1;"
            for t in tenants))
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertNotIn("duplicate key", z.log())
        self.assert_same(tenants)
        # A restart keeps every stream's own position.
        self.sql("".join(f"INSERT INTO {t}.users VALUES (1000, 'late', 1);" for t in tenants))
        self.assertEqual(z.run_once(), 0, z.log())
        self.assert_same(tenants)

    def test_upgrade_from_shared_table_state_then_rebuild(self):
        """A warehouse written by a release that kept one last_lsn per table for all
        streams: it is migrated, the damage is named, and one command repairs it."""
        tenants = ["tenant_a", "tenant_b", "tenant_c", "tenant_d"]
        self.assertEqual(len({slot_group(t, 2) for t in tenants}), 2)
        self.make_tenants(tenants)
        z = self.zetl(2)
        self.assertEqual(z.run_once(), 0, z.log())
        for k in range(3):
            self.sql("".join(
                f"INSERT INTO {t}.users SELECT g, 'e', g FROM generate_series({k * 50 + 1}, "
                f"{k * 50 + 50}) g; DELETE FROM {t}.users WHERE id % 7 = {k};"
                f"INSERT INTO {t}.items VALUES ({k}, '{t}');" for t in tenants))
            self.assertEqual(z.run_once(), 0, z.log())
        self.assert_same(tenants)
        # What the earlier release left: its table layout, a table mark from the stream
        # that applied last, rows of one group missing and a deleted row resurrected.
        self.wh("""
DROP TABLE zetl_raw._zetl_table_state;
CREATE TABLE zetl_raw._zetl_table_state (table_name text PRIMARY KEY, state text NOT NULL,
  reason text, stopped_at_lsn bigint, updated_at timestamptz, last_lsn bigint);
INSERT INTO zetl_raw._zetl_table_state SELECT t, 'active', NULL, NULL, now(),
  (SELECT max(last_lsn) FROM zetl_raw._zetl_offsets) FROM unnest(ARRAY['users', 'items']) t;
DELETE FROM zetl_raw.users WHERE tenant_id = 'tenant_b' AND id > 60;
INSERT INTO zetl_raw.users (tenant_id, id, email, score, _zetl_lsn) VALUES ('tenant_c', 7, 'gone', 0, 1);
""")
        rc, out, err = run_zetl(["verify", "--config", z.config], cwd=self.work)
        self.assertEqual(rc, 1, out + err)
        self.assertEqual(z.run_once(), 0, z.log())
        self.assertIn("written by an earlier zetl from 2 streams", z.log())
        self.assertIn("--rebuild --all", z.log())
        cols = self.wh("SELECT attname FROM pg_attribute WHERE attrelid = "
                       "'zetl_raw._zetl_table_state'::regclass AND attnum > 0 ORDER BY attnum")
        self.assertEqual(cols[0], ["stream"])
        rc, _, err = run_zetl(["resync", "--config", z.config, "--rebuild", "--all"],
                              cwd=self.work)
        self.assertEqual(rc, 0, err)
        self.assertIn("resync of every table", err)
        self.assert_same(tenants)
        # New changes after the repair arrive once; running the rebuild again changes nothing.
        self.sql("".join(f"UPDATE {t}.users SET score = -1 WHERE id < 5;" for t in tenants))
        self.assertEqual(z.run_once(), 0, z.log())
        self.assert_same(tenants)
        rc, _, err = run_zetl(["resync", "--config", z.config, "--all"], cwd=self.work)
        self.assertEqual(rc, 0, err)
        self.assert_same(tenants)
        rc, out, err = run_zetl(["verify", "--config", z.config], cwd=self.work)
        self.assertEqual(rc, 0, out + err)

    def test_one_writer_per_buffer_dir_and_per_slot(self):
        tenants = ["tenant_a", "tenant_b", "tenant_c"]
        self.make_tenants(tenants)
        z = self.zetl(2)
        self.assertEqual(z.run_once(), 0, z.log())
        z.start()
        deadline = time.time() + 30
        while z.log().count("streaming 2 slot group(s)") < 2:
            self.assertLess(time.time(), deadline, z.log())
            time.sleep(0.1)
        # The same buffer.dir: refused at once, naming the running process.
        second = self.zetl(2)
        t0 = time.time()
        self.assertEqual(second.run_once(timeout=30), 1, second.log())
        self.assertLess(time.time() - t0, 20)
        self.assertIn(f"in use by another zetl process (pid {z.proc.pid})", second.log())
        rc, _, err = run_zetl(["resync", "--config", z.config, "--all"], cwd=self.work)
        self.assertEqual(rc, 1, err)
        self.assertIn("in use by another zetl process", err)
        # Another buffer.dir, the same slots: refused too, the slots stay with the first.
        other = self.zetl(2, workdir=os.path.join(self.work, "other"))
        self.assertEqual(other.run_once(timeout=30), 1, other.log())
        self.assertIn("is streamed by another zetl process", other.log())
        self.sql("INSERT INTO tenant_a.users VALUES (1, 'a', 1); "
                 "INSERT INTO tenant_b.users VALUES (1, 'b', 2)")
        rc, out, err = run_zetl(["verify", "--config", z.config], cwd=self.work)
        self.assertEqual(rc, 0, out + err + z.log())
        self.assertEqual(z.kill(signal.SIGTERM), 0, z.log())
        self.assert_same(tenants)


if __name__ == "__main__":
    main()
