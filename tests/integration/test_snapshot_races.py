"""Snapshot races found in review, each once a lost, duplicated or stuck row:
a copy taken before its table joined the publication, tenants created while
zetl was stopped, a table created while its schema joins, DDL during a copy,
a re-snapshot of a table without a primary key, and `zetl snapshot` waiting
on a table named "pending".  Locks held by a second session make the races
deterministic; they only widen windows that exist anyway."""
import signal
import subprocess
import time

from test_snapshot import SnapshotBase, USERS
from zetltest import ZETL_BIN, main, run_zetl


class Held:
    """A psql session kept open (a transaction holding a lock)."""
    def __init__(self, cluster, db, sql):
        self.p = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                                   "-p", str(cluster.port), "-U", "postgres", "-d", db],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.p.stdin.write(sql.encode()); self.p.stdin.flush()

    def done(self, sql="COMMIT;\n"):
        out, err = self.p.communicate(sql.encode(), timeout=60)
        return err.decode()


class Races(SnapshotBase):
    def count(self, t, table):
        r = self.wh(f"SELECT to_regclass('zetl_raw.{table}')")
        if not r or r[0][0] is None:
            return 0
        return int(self.wh(f"SELECT count(*) FROM zetl_raw.{table} WHERE tenant_id = '{t}'")[0][0])

    def test_tenant_created_while_zetl_is_down(self):
        self.make_tenant("tenant_a", 100, tables=("users",))
        z = self.zetl(groups=1)
        self.assertEqual(z.run_once(), 0, z.log())
        # zetl is down (deploy, crash): a tenant is created with rows.
        self.make_tenant("tenant_b", 100, tables=("users",))
        self.assertEqual(z.run_once(), 0, z.log())
        self.sql("INSERT INTO tenant_b.users VALUES (1000, 'after', 1, NULL)")
        self.assertEqual(z.run_once(), 0, z.log())
        self.assert_same(["tenant_a", "tenant_b"], tables=("users",))

    def test_copy_before_alter_publication_table_list(self):
        self.make_tenant("tenant_a", 100, tables=("users",))
        z = self.zetl(groups=1, source_extra='  tables: ["users", "extra_*"]\n', refresh_ms=1500)
        z.start()
        self.wait_for(lambda: self.count("tenant_a", "users") == 100, 60, "initial snapshot")
        # A new table with rows; a session holds SHARE UPDATE EXCLUSIVE on it (autovacuum,
        # CREATE INDEX CONCURRENTLY, ANALYZE do the same) so ALTER PUBLICATION waits.
        h = Held(self.src, self.db,
                 "CREATE TABLE tenant_a.extra_x (id int PRIMARY KEY, v text);"
                 "INSERT INTO tenant_a.extra_x SELECT g, 'v' FROM generate_series(1, 50) g;"
                 "BEGIN; LOCK TABLE tenant_a.extra_x IN SHARE UPDATE EXCLUSIVE MODE;\n")
        time.sleep(3.5)  # the refresh found the table and waits on ALTER PUBLICATION
        self.sql("INSERT INTO tenant_a.extra_x SELECT g, 'w' FROM generate_series(51, 60) g")
        h.done()
        self.wait_for(lambda: "added to publication" in z.log(), 30, "ALTER PUBLICATION")
        self.sql("INSERT INTO tenant_a.extra_x VALUES (61, 'after')")
        self.wait_for(lambda: self.wh("SELECT to_regclass('zetl_raw.extra_x')")[0][0] and
                      self.wh("SELECT count(*) FROM zetl_raw.extra_x WHERE id = 61") == [["1"]],
                      30, "row 61")
        z.kill(signal.SIGTERM)
        got = int(self.wh("SELECT count(*) FROM zetl_raw.extra_x")[0][0])
        self.assertEqual(got, 61, "rows 51..60 were committed after the copy and before "
                         "ALTER PUBLICATION: in neither\n" + z.log()[-2000:])

    def test_schema_mode_table_created_before_alter(self):
        self.make_tenant("tenant_a", 100, tables=("users",))
        z = self.zetl(groups=1, refresh_ms=500)
        z.start()
        self.wait_for(lambda: self.count("tenant_a", "users") == 100, 60, "initial snapshot")
        # Another ALTER PUBLICATION in flight holds the publication's lock a moment.
        self.sql("CREATE TABLE public.dummy (id int)")
        h = Held(self.src, self.db, "BEGIN; ALTER PUBLICATION zetl_0 ADD TABLE public.dummy;\n")
        self.sql("CREATE SCHEMA tenant_n")
        time.sleep(2)  # the refresh lists tenant_n (no table yet) and waits on ALTER
        self.sql(f"CREATE TABLE tenant_n.users ({USERS});"
                 "INSERT INTO tenant_n.users SELECT g, 'x', 1, NULL FROM generate_series(1, 40) g")
        h.done("ROLLBACK;\n")
        self.wait_for(lambda: "added to publication" in z.log(), 30, "ALTER PUBLICATION")
        self.sql("INSERT INTO tenant_n.users VALUES (41, 'after', 1, NULL)")
        self.wait_for(lambda: self.count("tenant_n", "users") >= 1, 30, "row 41")
        time.sleep(2)
        z.kill(signal.SIGTERM)
        self.assert_same(["tenant_a", "tenant_n"], tables=("users",))

    def test_copy_before_alter_publication_schema_mode(self):
        self.make_tenant("tenant_a", 100, tables=("users",))
        z = self.zetl(groups=1, refresh_ms=500)
        z.start()
        self.wait_for(lambda: self.count("tenant_a", "users") == 100, 60, "initial snapshot")
        self.sql("CREATE TABLE public.dummy (id int)")
        h = Held(self.src, self.db, "BEGIN; ALTER PUBLICATION zetl_0 ADD TABLE public.dummy;\n")
        self.sql(f"BEGIN; CREATE SCHEMA tenant_m; CREATE TABLE tenant_m.users ({USERS});"
                 "INSERT INTO tenant_m.users SELECT g, 'x', 1, NULL FROM generate_series(1, 50) g;"
                 "COMMIT;")
        time.sleep(2)  # the refresh found tenant_m and waits on ALTER PUBLICATION
        self.sql("INSERT INTO tenant_m.users SELECT g, 'y', 1, NULL FROM generate_series(51, 60) g")
        h.done("ROLLBACK;\n")
        self.wait_for(lambda: "added to publication" in z.log(), 30, "ALTER PUBLICATION")
        self.sql("INSERT INTO tenant_m.users VALUES (61, 'after', 1, NULL)")
        self.wait_for(lambda: self.wh("SELECT count(*) FROM zetl_raw.users WHERE tenant_id = "
                                      "'tenant_m' AND id = 61") == [["1"]], 30, "row 61")
        z.kill(signal.SIGTERM)
        self.assert_same(["tenant_a", "tenant_m"], tables=("users",))

    def test_ddl_during_snapshot_is_retried(self):
        """A column dropped between reading the table's columns and copying a chunk: the
        chunk is copied again with the columns read again, zetl keeps going."""
        self.make_tenant("tenant_a", 100000, tables=("users",))
        z = self.zetl(groups=1)
        self.assertEqual(z.run_once(), 0, z.log())
        # The DROP waits uncommitted: a re-snapshot reads the old columns, and its first chunk
        # waits for that transaction (in progress at the low watermark) to end.
        h = Held(self.src, self.db, "BEGIN; ALTER TABLE tenant_a.users DROP COLUMN score;\n")
        p = subprocess.Popen([ZETL_BIN, "snapshot", "--config", z.config], cwd=self.work,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(3)
        h.done()
        out, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0, err.decode())
        self.assertIn("changed while it was copied", err.decode())
        self.assertEqual(z.run_once(), 0, z.log())
        src = self.sql("SELECT count(*) FROM tenant_a.users")
        self.assertEqual(self.wh("SELECT count(*) FROM zetl_raw.users"), src)

    def test_resnapshot_table_without_primary_key(self):
        self.sql("CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.log (at int, msg text);"
                 "ALTER TABLE tenant_a.log REPLICA IDENTITY FULL;"
                 "INSERT INTO tenant_a.log SELECT g % 10, 'm' || g FROM generate_series(1, 500) g;")
        z = self.zetl(groups=1)
        self.assertEqual(z.run_once(), 0, z.log())
        rc, out, err = run_zetl(["snapshot", "--config", z.config, "--table", "log"],
                                cwd=self.work, timeout=120)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(self.wh("SELECT count(*) FROM zetl_raw.log"), [["500"]])

    def test_table_named_pending(self):
        self.sql("CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.pending (id int PRIMARY KEY);"
                 "INSERT INTO tenant_a.pending VALUES (1)")
        z = self.zetl(groups=1)
        self.assertEqual(z.run_once(), 0, z.log())
        z.start()
        time.sleep(1)
        try:
            rc, out, err = run_zetl(["snapshot", "--config", z.config], cwd=self.work, timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("zetl snapshot never returns: the state file contains \"pending\" as a "
                      "table name")
        finally:
            z.kill(signal.SIGTERM)
        self.assertEqual(rc, 0, out + err)


if __name__ == "__main__":
    main()
