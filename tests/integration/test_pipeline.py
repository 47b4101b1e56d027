"""End to end: source -> zetl daemon -> archive -> PostgreSQL warehouse, checked
with `zetl verify` and with SQL against both sides.

Every test runs twice: `PipelineTest` with `slot_groups: 1`, and
`PipelineSlotGroups2Test` with `slot_groups: 2`, where tenant_b is captured by
slot zetl_0 and tenant_a and tenant_c by zetl_1, all applying into the same
warehouse tables."""

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from zetltest import Cluster, Zetl, config, main, run_zetl, slot_group

TENANTS = ["tenant_a", "tenant_b", "tenant_c"]



def ddl(schema):
    return f"""
CREATE SCHEMA {schema};
CREATE TABLE {schema}.users (id int PRIMARY KEY, email text, name text, score numeric(10,2),
  updated timestamptz DEFAULT now());
CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, user_id int, total numeric(12,2), note text);
"""


def random_workload(rng, n_txn, next_id):
    """SQL for n_txn random transactions over the tenants: inserts, updates (some
    changing the key), deletes, truncates, transactions touching several tenants."""
    stmts = []
    for _ in range(n_txn):
        body = []
        for _ in range(rng.randint(1, 6)):
            t = rng.choice(TENANTS)
            r = rng.random()
            if r < 0.45:
                n = rng.randint(1, 20)
                body.append(f"INSERT INTO {t}.users SELECT g, 'u' || g || '@x', md5(g::text), "
                            f"g % 1000 / 7.0 FROM generate_series({next_id}, {next_id + n - 1}) g "
                            f"ON CONFLICT DO NOTHING;")
                body.append(f"INSERT INTO {t}.orders SELECT g, g % 50, g / 3.0, 'o' FROM "
                            f"generate_series({next_id}, {next_id + n - 1}) g ON CONFLICT DO NOTHING;")
                next_id += n
            elif r < 0.70:
                body.append(f"UPDATE {t}.users SET name = md5(random()::text), score = score + 1, "
                            f"updated = now() WHERE id % {rng.randint(3, 17)} = {rng.randint(0, 2)};")
            elif r < 0.78:
                body.append(f"UPDATE {t}.users SET id = id + 1000000 WHERE id IN (SELECT id FROM "
                            f"{t}.users WHERE id < 1000000 ORDER BY id LIMIT 2);")
            elif r < 0.95:
                body.append(f"DELETE FROM {t}.users WHERE id % {rng.randint(5, 30)} = 1;")
                body.append(f"DELETE FROM {t}.orders WHERE id % {rng.randint(5, 30)} = 2;")
            else:
                body.append(f"TRUNCATE {t}.orders;")
        stmts.append("BEGIN;\n" + "\n".join(body) + "\nCOMMIT;")
    return "\n".join(stmts), next_id


class PipelineTest(unittest.TestCase):
    SLOT_GROUPS = 1

    @classmethod
    def setUpClass(cls):
        cls.src = Cluster(extra_conf="wal_sender_timeout = 3s\n")
        cls.wh = Cluster(wal_level="replica")

    @classmethod
    def tearDownClass(cls):
        cls.src.destroy()
        cls.wh.destroy()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="zetl-test-")
        name = self.id().split(".")[-1].lower()[:40]
        self.db = self.src.createdb(name)
        self.whdb = self.wh.createdb(name)
        self.src.psql("".join(ddl(t) for t in TENANTS), db=self.db)
        self.z = Zetl(self.work, self.cfg())

    def tearDown(self):
        if self.z.proc is not None and self.z.proc.poll() is None:
            self.z.kill()
        Zetl.kill_all()
        self.src.drop_slots(self.db)
        self.src.psql(f'DROP DATABASE "{self.db}" WITH (FORMAT)'.replace("FORMAT", "FORCE"))
        if self.wh.pid is None:
            self.wh.start()
        self.wh.psql(f'DROP DATABASE "{self.whdb}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def cfg(self, deletes="hard"):
        return config(self.src, self.db, slot_groups=self.SLOT_GROUPS, extra=f"""warehouse:
  kind: postgres
  dsn: "{self.wh.dsn(self.whdb)}"
  schema: zetl_raw
  deletes: {deletes}
""")

    def sql(self, text):
        return self.src.psql(text, db=self.db)

    def whsql(self, text):
        return self.wh.psql(text, db=self.whdb)

    def verify(self):
        return run_zetl(["verify", "--config", self.z.config], cwd=self.work)

    def wait_active(self, timeout=30):
        """Waits until every slot of the database is streaming."""
        deadline = time.time() + timeout
        while self.sql(f"SELECT count(*) FILTER (WHERE active) <> {self.SLOT_GROUPS} "
                       f"FROM pg_replication_slots WHERE database = '{self.db}'") != [["f"]]:
            self.assertLess(time.time(), deadline, "zetl did not connect:\n" + self.z.log())
            time.sleep(0.1)

    def active_pids(self):
        return self.sql(f"SELECT slot_name, active_pid FROM pg_replication_slots "
                        f"WHERE database = '{self.db}' ORDER BY slot_name")

    def slot_of(self, tenant):
        """The slot (= publication name) that captures a tenant schema, from the catalog."""
        rows = self.sql("SELECT p.pubname FROM pg_publication_namespace pn "
                        "JOIN pg_publication p ON p.oid = pn.pnpubid "
                        "JOIN pg_namespace n ON n.oid = pn.pnnspid "
                        f"WHERE n.nspname = '{tenant}'")
        self.assertEqual(len(rows), 1, f"publications of {tenant}: {rows}")
        return rows[0][0]

    def confirmed_flush(self, slot):
        """The slot's confirmed_flush_lsn as an integer."""
        return int(self.sql(f"SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM "
                            f"pg_replication_slots WHERE slot_name = '{slot}' "
                            f"AND database = '{self.db}'")[0][0])

    def assert_tenants_equal(self, tenants=TENANTS, tables=("users", "orders")):
        """Source and warehouse compared per tenant in SQL, independently of zetl verify."""
        cols = {"users": "id, email, name, score, updated", "orders": "id, user_id, total, note"}
        for t in tenants:
            for table in tables:
                c = cols[table]
                src = self.sql(f"SET timezone = 'UTC'; SELECT {c} FROM {t}.{table} ORDER BY id")
                got = self.whsql(f"SET timezone = 'UTC'; SELECT {c} FROM zetl_raw.{table} "
                                 f"WHERE tenant_id = '{t}' ORDER BY id")
                self.assertEqual(len(got), len(src), f"{t}.{table}: row count")
                self.assertEqual(got, src, f"{t}.{table}")
        self.assertEqual(self.whsql("SELECT DISTINCT tenant_id FROM zetl_raw.users "
                                    "WHERE tenant_id NOT IN ('" + "', '".join(tenants) + "')"), [])

    def lock_warehouse_table(self, table):
        """Holds ACCESS EXCLUSIVE on a warehouse table in an open psql transaction; returns
        the psql process once the lock is granted (release: release_lock)."""
        locker = subprocess.Popen(
            ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.wh.port), "-U", "postgres",
             "-d", self.whdb], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        locker.stdin.write(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n".encode())
        locker.stdin.flush()
        deadline = time.time() + 30
        while self.whsql(f"SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass "
                         f"AND mode = 'AccessExclusiveLock' AND granted") != [["1"]]:
            self.assertLess(time.time(), deadline, "could not lock " + table)
            time.sleep(0.05)
        return locker

    @staticmethod
    def release_lock(locker):
        locker.stdin.write(b"COMMIT;\n")
        locker.stdin.close()
        locker.wait()

    def test_mixed_random_workload_then_verify(self):
        rng = random.Random(7)
        self.assertEqual(self.z.run_once(), 0, self.z.log())
        self.z.start()
        self.wait_active()
        next_id = 1
        for _ in range(6):
            sql, next_id = random_workload(rng, 40, next_id)
            self.sql(sql)
        rc, out, err = self.verify()
        self.assertEqual(rc, 0, out + err + self.z.log())
        self.assertIn("equal", out)
        # The warehouse key is (tenant, id): no duplicates, every tenant present.
        self.assertEqual(self.whsql("SELECT count(*) FROM (SELECT tenant_id, id FROM "
                                    "zetl_raw.users GROUP BY 1, 2 HAVING count(*) > 1) d"), [["0"]])
        # A hand-made difference is found and named.
        self.whsql("UPDATE zetl_raw.users SET name = 'tampered' WHERE id = (SELECT min(id) FROM "
                   "zetl_raw.users WHERE tenant_id = 'tenant_b') AND tenant_id = 'tenant_b'")
        rc, out, _ = self.verify()
        self.assertEqual(rc, 1, out)
        self.assertIn("DIFFERENT", out)
        self.assertIn("values differ", out)
        self.assertEqual(self.z.kill(signal.SIGTERM), 0, self.z.log())

    def test_verify_after_once_without_a_daemon(self):
        self.assertEqual(self.z.run_once(), 0, self.z.log())
        self.sql("INSERT INTO tenant_a.users (id, email) SELECT g, 'e' FROM generate_series(1, 50) g")
        self.assertEqual(self.z.run_once(), 0, self.z.log())
        # WAL after the last change that touches no tenant table: zetl is not running, the
        # warehouse offset is older than the source position, yet nothing is pending.
        self.sql("CREATE TABLE public.noise (x int); INSERT INTO public.noise VALUES (1)")
        rc, out, err = self.verify()
        self.assertEqual(rc, 0, out + err)
        self.assertIn("equal", out)

    def test_kill_9_during_apply_then_restart(self):
        rng = random.Random(11)
        self.assertEqual(self.z.run_once(), 0, self.z.log())
        next_id = 1
        for round_ in range(4):
            self.z.start()
            self.wait_active()
            sql, next_id = random_workload(rng, 60, next_id)
            self.sql(sql)
            time.sleep(0.1 + 0.2 * round_)
            self.z.kill(signal.SIGKILL)
        self.assertEqual(self.z.run_once(), 0, self.z.log())
        self.z.start()
        rc, out, err = self.verify()
        self.assertEqual(rc, 0, out + err + self.z.log())
        self.assertEqual(self.z.kill(signal.SIGTERM), 0, self.z.log())

    def test_warehouse_down_during_run_loses_nothing(self):
        self.assertEqual(self.z.run_once(), 0, self.z.log())
        self.z.start()
        self.wait_active()
        self.sql("INSERT INTO tenant_a.users SELECT g, 'e', 'n', 1 FROM generate_series(1, 100) g")
        time.sleep(1)
        self.wh.stop()
        self.sql("INSERT INTO tenant_b.users SELECT g, 'e', 'n', 2 FROM generate_series(1, 100) g")
        time.sleep(4)  # zetl retries with backoff; the replication connection stays up
        self.assertIsNone(self.z.proc.poll(), self.z.log())
        self.assertIn("retrying", self.z.log())
        pid_before = self.active_pids()
        self.wh.start()
        rc, out, err = self.verify()
        self.assertEqual(rc, 0, out + err + self.z.log())
        pid_after = self.active_pids()
        self.assertEqual(pid_before, pid_after, "the replication connection was dropped")
        self.assertEqual(self.z.kill(signal.SIGTERM), 0, self.z.log())

    def test_slow_warehouse_keeps_replication_alive(self):
        """A blocked apply (a lock held in the warehouse) must not let the walsender
        time out (wal_sender_timeout = 3s): status updates go on under backpressure."""
        self.assertEqual(self.z.run_once(), 0, self.z.log())  # slot and publication
        self.sql("INSERT INTO tenant_a.users VALUES (0, 'e', 'n', 1)")
        self.assertEqual(self.z.run_once(), 0, self.z.log())  # creates the warehouse table
        self.z.start()
        self.wait_active()
        pid_before = self.active_pids()
        locker = self.lock_warehouse_table("zetl_raw.users")
        for k in range(8):
            self.sql(f"INSERT INTO tenant_a.users SELECT g, 'e', 'n', 1 FROM "
                     f"generate_series({k * 1000 + 1}, {k * 1000 + 1000}) g")
            time.sleep(1)
        pid_during = self.active_pids()
        self.release_lock(locker)
        self.assertEqual(pid_before, pid_during, "walsender timed out while the sink was slow")
        rc, out, err = self.verify()
        self.assertEqual(rc, 0, out + err + self.z.log())
        self.assertNotIn("reconnecting", self.z.log())
        self.assertEqual(self.z.kill(signal.SIGTERM), 0, self.z.log())

    def test_warehouse_unreachable_at_start(self):
        self.wh.stop()
        rc = self.z.run_once()
        self.wh.start()
        self.assertEqual(rc, 1, self.z.log())
        self.assertIn("warehouse", self.z.log())
        self.assertEqual(self.sql(f"SELECT count(*) FROM pg_replication_slots WHERE database = "
                                  f"'{self.db}'"), [["0"]])

    def test_tenants_in_different_slot_groups_share_tables(self):
        """Tenants of different streams interleave their transactions into the same
        warehouse tables: inserts, updates, key changes, deletes, a truncate, transactions
        spanning tenants of both streams. Compared per tenant in SQL after every round."""
        self.assertEqual(self.z.run_once(), 0, self.z.log())
        groups = {t: self.slot_of(t) for t in TENANTS}
        self.assertEqual(groups, {t: f"zetl_{slot_group(t, self.SLOT_GROUPS)}" for t in TENANTS})
        if self.SLOT_GROUPS == 2:
            self.assertEqual(groups, {"tenant_a": "zetl_1", "tenant_b": "zetl_0",
                                      "tenant_c": "zetl_1"})
        # Round 1: inserts, one transaction per tenant, the tenants' transactions alternating.
        rounds = [[f"INSERT INTO {t}.users (id, email, name, score) SELECT g, '{t}' || g, "
                   f"'n' || g, g FROM generate_series({k * 20 + 1}, {k * 20 + 20}) g; "
                   f"INSERT INTO {t}.orders SELECT g, g % 7, g * 1.5, '{t}' FROM "
                   f"generate_series({k * 20 + 1}, {k * 20 + 20}) g;"
                   for k in range(3) for t in TENANTS]]
        # Round 2: updates, key changes and deletes of rows of round 1, alternating too.
        rounds.append([s for k in range(3) for t in TENANTS for s in (
            f"UPDATE {t}.users SET name = 'u{k}', score = score + {k} WHERE id % 4 = {k};",
            f"DELETE FROM {t}.users WHERE id % 9 = {k};",
            f"UPDATE {t}.users SET id = id + 1000 WHERE id = {k * 20 + 5};",
            f"UPDATE {t}.orders SET note = NULL, total = total * 2 WHERE id % 3 = {k};")] + [
            "BEGIN; DELETE FROM tenant_a.users WHERE id = 2; "
            "UPDATE tenant_b.users SET email = 'both' WHERE id = 3; "
            "INSERT INTO tenant_c.users (id, email) VALUES (500, 'c'); COMMIT;",
            "TRUNCATE tenant_c.orders;",
            "INSERT INTO tenant_c.orders VALUES (1, 1, 1, 'after truncate');"])
        # Round 3: a seeded random mix, then the daemon instead of --once.
        sql, _ = random_workload(random.Random(3), 25, 2000)
        rounds.append([sql])
        for r, stmts in enumerate(rounds):
            for st in stmts:
                self.sql(st)
            if r < 2:
                self.assertEqual(self.z.run_once(), 0, self.z.log())
                self.assert_tenants_equal()
        self.z.start()
        self.wait_active()
        rc, out, err = self.verify()
        self.assertEqual(rc, 0, out + err + self.z.log())
        self.assert_tenants_equal()
        self.assertEqual(self.z.kill(signal.SIGTERM), 0, self.z.log())
        # Every stream wrote its own offset.
        self.assertEqual([r[0] for r in self.whsql("SELECT stream FROM zetl_raw._zetl_offsets "
                                                   "ORDER BY 1")],
                         sorted(set(groups.values())))

    def test_slot_never_confirms_past_unapplied_rows(self):
        """While the warehouse cannot commit (a lock held on its table), the rows are
        archived but the slot's confirmed_flush_lsn stays below their commit LSN."""
        self.assertEqual(self.z.run_once(), 0, self.z.log())  # slots and publications
        self.sql("INSERT INTO tenant_a.users VALUES (0, 'e', 'n', 1)")
        self.assertEqual(self.z.run_once(), 0, self.z.log())  # creates the warehouse table
        slot = self.slot_of("tenant_a")
        self.z.start()
        self.wait_active()
        locker = self.lock_warehouse_table("zetl_raw.users")
        try:
            start = int(self.sql("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0][0])
            for k in range(3):
                self.sql(f"INSERT INTO tenant_a.users (id, email, name, score) SELECT g, 'e', "
                         f"'n', 1 FROM generate_series({k * 10 + 1}, {k * 10 + 10}) g")
            after = int(self.sql("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0][0])
            # Wait until zetl has archived them (it read them and one sink made them
            # durable), then give it several status intervals to (wrongly) confirm them.
            sdir = os.path.join(self.work, "archive", slot)
            deadline = time.time() + 30
            while not any(b.split("-")[-1] > "%016X" % start for b in
                          (os.listdir(sdir) if os.path.isdir(sdir) else [])
                          if not b.startswith(".")):
                self.assertLess(time.time(), deadline, "not archived:\n" + self.z.log())
                time.sleep(0.1)
            flushes = []
            for _ in range(20):
                flushes.append(self.confirmed_flush(slot))
                time.sleep(0.2)
            self.assertIsNone(self.z.proc.poll(), self.z.log())
        finally:
            self.release_lock(locker)
        rc, out, err = self.verify()
        self.assertEqual(rc, 0, out + err + self.z.log())
        self.assert_tenants_equal(tables=("users",))
        first_commit = int(self.whsql("SELECT min(_zetl_lsn) FROM zetl_raw.users WHERE "
                                      "tenant_id = 'tenant_a' AND id BETWEEN 1 AND 30")[0][0])
        self.assertTrue(start < first_commit < after, (start, first_commit, after))
        self.assertLess(max(flushes), first_commit,
                        f"slot {slot} confirmed past rows the warehouse had not committed")
        # Once the warehouse has them, the slot moves past them.
        deadline = time.time() + 30
        while self.confirmed_flush(slot) < after:
            self.assertLess(time.time(), deadline, "the slot did not move on:\n" + self.z.log())
            time.sleep(0.2)
        self.assertEqual(self.z.kill(signal.SIGTERM), 0, self.z.log())

    def test_soft_and_history_delete_modes(self):
        for mode in ("soft", "history"):
            with self.subTest(mode=mode):
                work = tempfile.mkdtemp(prefix="zetl-test-")
                try:
                    cfg = self.cfg(deletes=mode).replace("schema: zetl_raw", f"schema: wh_{mode}")
                    cfg = cfg.replace("slot: zetl", f"slot: zetl_{mode}")
                    z = Zetl(work, cfg)
                    self.assertEqual(z.run_once(), 0, z.log())
                    self.sql("INSERT INTO tenant_a.users (id, email, name, score) VALUES "
                             "(1, 'a', 'v1', 1), (2, 'b', 'v1', 2)")
                    self.sql("UPDATE tenant_a.users SET name = 'v2' WHERE id = 1")
                    self.sql("DELETE FROM tenant_a.users WHERE id = 2")
                    self.assertEqual(z.run_once(), 0, z.log())
                    if mode == "soft":
                        rows = self.whsql("SELECT id, name, _zetl_deleted FROM wh_soft.users "
                                          "ORDER BY id")
                        self.assertEqual(rows, [["1", "v2", "f"], ["2", "v1", "t"]])
                    else:
                        rows = self.whsql("SELECT id, name, _zetl_valid_to IS NULL FROM "
                                          "wh_history.users ORDER BY id, _zetl_valid_from")
                        self.assertEqual(rows, [["1", "v1", "f"], ["1", "v2", "t"],
                                                ["2", "v1", "f"]])
                    self.sql("DELETE FROM tenant_a.users")
                finally:
                    shutil.rmtree(work, ignore_errors=True)


class PipelineSlotGroups2Test(PipelineTest):
    """All of the above with the tenants spread over two slots (streams)."""
    SLOT_GROUPS = 2


if __name__ == "__main__":
    main()
